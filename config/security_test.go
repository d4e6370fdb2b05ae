package config

import (
	"strings"
	"testing"
	"time"
)

const secured = `
listeners:
  - name: sasl_ssl
    listen: 0.0.0.0:9093
    advertise: kproxy.example:9093
    tls: { cert_file: /etc/kproxy/tls.crt, key_file: /etc/kproxy/tls.key, min_version: "1.3",
           client_ca_file: /etc/kproxy/clients.pem,
           principal_mapping: [{pattern: "^CN=([^,]+)", principal: "$1", case: lower}] }
    sasl: { users_file: /etc/kproxy/users.yaml, max_reauth: 1h }
  - listen: 127.0.0.1:9092
admin: { address: 0.0.0.0:9644, token_file: /etc/kproxy/admin.token, pprof: true, tls: { cert_file: a.crt, key_file: a.key } }
clusters:
  source:
    bootstrap: [src:9093]
    tls: { ca_file: /etc/kproxy/src-ca.pem, server_name: src.internal }
    sasl: { mechanism: SCRAM-SHA-512, username: kproxy, password_file: /run/secrets/src }
  target:
    bootstrap: [tgt:9093]
    sasl: { mechanism: PLAIN, username_env: TGT_USER, password_env: TGT_PASSWORD }
routes:
  default: source
`

func TestParseSecuredConfig(t *testing.T) {
	c := mustParse(t, secured)
	if c.Listen != "" || len(c.Listeners) != 2 {
		t.Fatalf("listen %q, %d listeners", c.Listen, len(c.Listeners))
	}
	l := c.Listeners[0]
	if l.TLS.MinVersion != "1.3" || l.SASL.MaxReauth != time.Hour || len(l.SASL.Mechanisms) != 3 || l.TLS.PrincipalMapping[0].Case != "lower" {
		t.Errorf("first listener: %+v %+v %+v", l, l.TLS, l.SASL)
	}
	if c.Listeners[1].Name != "listener-1" || c.Listeners[1].Advertise != "127.0.0.1:9092" {
		t.Errorf("second listener defaults: %+v", c.Listeners[1])
	}
	if c.Admin != "0.0.0.0:9644" || !c.AdminHTTP.Pprof {
		t.Errorf("admin %q %+v", c.Admin, c.AdminHTTP)
	}
	if c.Clusters.Source.SASL.PasswordFile != "/run/secrets/src" || c.Clusters.Target.SASL.PasswordEnv != "TGT_PASSWORD" {
		t.Errorf("cluster sasl: %+v %+v", c.Clusters.Source.SASL, c.Clusters.Target.SASL)
	}
	// The short admin form still works and keeps the old listen.
	old := mustParse(t, minimal+"admin: 127.0.0.1:9644\n")
	if old.Admin != "127.0.0.1:9644" || old.AdminHTTP.Pprof || len(old.EffectiveListeners()) != 1 || old.EffectiveListeners()[0].Name != "plaintext" {
		t.Errorf("old form: admin %q %+v listeners %+v", old.Admin, old.AdminHTTP, old.EffectiveListeners())
	}
}

func TestSecurityValidation(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"admin off loopback without a token", minimal + "admin: 0.0.0.0:9644\n", "admin (line 8): \"0.0.0.0:9644\" is reachable from other machines"},
		{"admin off loopback, insecure on purpose", minimal + "admin: {address: 10.0.0.5:9644, insecure: true}\n", ""},
		{"inline password", strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: PLAIN, username: u, password: hunter2} }", 1), "clusters.source.sasl.password (line 4): unknown key"},
		{"no password source", strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: PLAIN, username: u} }", 1), "clusters.source.sasl (line 4): set exactly one of password_file and password_env"},
		{"unknown mechanism", strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: GSSAPI, username: u, password_env: P} }", 1), "clusters.source.sasl.mechanism (line 4): unknown mechanism \"GSSAPI\""},
		{"tls listener without a key", minimal + "listeners: [{listen: 127.0.0.1:9093, tls: {cert_file: a.crt}}]\n", "listeners[0].tls.key_file"},
		{"sasl listener without users", minimal + "listeners: [{listen: 127.0.0.1:9093, sasl: {mechanisms: [PLAIN]}}]\n", "listeners[0].sasl.users_file"},
		{"mapping without mTLS", minimal + "listeners: [{listen: 127.0.0.1:9093, tls: {cert_file: a, key_file: b, principal_mapping: [{pattern: x, principal: y}]}}]\n", "needs client_ca_file"},
		{"no listener at all", strings.Replace(minimal, "listen: 127.0.0.1:9092\n", "", 1), "listen: required"},
		{"duplicate listener name", minimal + "listeners: [{name: plaintext, listen: 127.0.0.1:9093}]\n", "listener name \"plaintext\" is used twice"},
	} {
		_, err := Parse([]byte(tc.yaml))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestSecurityChangesNeedARestart(t *testing.T) {
	a := mustParse(t, secured)
	b := mustParse(t, strings.Replace(secured, "max_reauth: 1h", "max_reauth: 2h", 1))
	got := strings.Join(RestartRequired(a, b), "\n")
	if !strings.Contains(got, "listeners: changed") {
		t.Errorf("restart-required: %q", got)
	}
}

func TestReadSecretNeverReturnsItInErrors(t *testing.T) {
	t.Setenv("KP_EMPTY", "")
	if _, err := ReadSecret("", "KP_EMPTY"); err == nil || !strings.Contains(err.Error(), "KP_EMPTY") {
		t.Errorf("empty variable: %v", err)
	}
	t.Setenv("KP_SET", "v3ry-s3cret\n")
	if s, err := ReadSecret("", "KP_SET"); err != nil || s != "v3ry-s3cret\n" {
		t.Errorf("got %q %v", s, err)
	}
}

func TestPolicyValidation(t *testing.T) {
	c := mustParse(t, minimal+"policy:\n  admin:\n    - { principals: [\"ops-*\"], operations: [delete_topics, alter_configs] }\n")
	if c.Policy == nil || len(c.Policy.Admin) != 1 {
		t.Fatalf("policy %+v", c.Policy)
	}
	if c := mustParse(t, minimal+"policy: {}\n"); c.Policy == nil {
		t.Error("an empty policy (deny every destructive admin API) parsed as none")
	}
	_, err := Parse([]byte(minimal + "policy:\n  admin:\n    - { principals: [\"[\"], operations: [drop_everything] }\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown operation "drop_everything"`) || !strings.Contains(err.Error(), `not a principal or glob: "["`) {
		t.Errorf("bad policy: %v", err)
	}
}

func TestTopicPolicyValidation(t *testing.T) {
	c := mustParse(t, minimal+"policy:\n  topics:\n    - { principals: [\"app-*\"], topics: [\"orders*\"], operations: [produce, fetch, describe] }\n")
	if len(c.Policy.Topics) != 1 || c.Policy.Topics[0].Topics[0] != "orders*" {
		t.Fatalf("policy %+v", c.Policy)
	}
	_, err := Parse([]byte(minimal + "policy:\n  topics:\n    - { principals: [a], operations: [write] }\n"))
	if err == nil || !strings.Contains(err.Error(), "policy.topics[0].topics") || !strings.Contains(err.Error(), `unknown operation "write"`) {
		t.Errorf("bad topic rule: %v", err)
	}
}

func TestGroupPolicyValidation(t *testing.T) {
	c := mustParse(t, minimal+"policy:\n  groups:\n    - { principals: [\"app-*\"], groups: [\"orders-*\"] }\n")
	if len(c.Policy.Groups) != 1 || c.Policy.Groups[0].Groups[0] != "orders-*" {
		t.Fatalf("policy %+v", c.Policy)
	}
	if _, err := Parse([]byte(minimal + "policy:\n  groups:\n    - { principals: [a] }\n")); err == nil || !strings.Contains(err.Error(), "policy.groups[0].groups") {
		t.Errorf("group rule without groups: %v", err)
	}
}

func TestOAuthBearerConfig(t *testing.T) {
	c := mustParse(t, minimal+"listeners:\n  - listen: 127.0.0.1:9093\n    sasl: { oauthbearer: { jwks_file: /etc/jwks.json, issuer: https://idp, audience: kafka } }\n")
	s := c.Listeners[0].SASL
	if len(s.Mechanisms) != 1 || s.Mechanisms[0] != MechOAuthBearer || s.OAuthBearer.ClockSkew != DefaultClockSkew {
		t.Errorf("defaults: %+v %+v", s, s.OAuthBearer)
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"oauth without section":  {minimal + "listeners: [{listen: 127.0.0.1:9093, sasl: {users_file: u, mechanisms: [OAUTHBEARER]}}]\n", "OAUTHBEARER needs the oauthbearer section"},
		"scram without users":    {minimal + "listeners: [{listen: 127.0.0.1:9093, sasl: {oauthbearer: {jwks_file: j}, mechanisms: [SCRAM-SHA-256]}}]\n", "SCRAM-SHA-256 needs users_file"},
		"upstream token twice":   {strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: OAUTHBEARER, token_file: f, token_env: E} }", 1), "set exactly one of token_file, token_env and token_endpoint"},
		"endpoint over http":     {strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: OAUTHBEARER, token_endpoint: {url: http://idp/token, client_id: kp, client_secret_env: S}} }", 1), "token_endpoint.url (line 4): must be an https:// URL"},
		"endpoint inline secret": {strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: OAUTHBEARER, token_endpoint: {url: https://idp/token, client_id: kp, client_secret: hunter2}} }", 1), "client_secret (line 4): unknown key"},
		"jwks file and url":      {minimal + "listeners: [{listen: 127.0.0.1:9093, sasl: {oauthbearer: {jwks_file: j, jwks_url: https://idp/jwks}}}]\n", "set exactly one of jwks_file and jwks_url"},
		"jwks url over http":     {minimal + "listeners: [{listen: 127.0.0.1:9093, sasl: {oauthbearer: {jwks_url: http://idp/jwks}}}]\n", "jwks_url (line 8): must be an https:// URL"},
	} {
		if _, err := Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	ok := strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: OAUTHBEARER, token_env: SRC_TOKEN} }", 1)
	mustParse(t, ok)
	mustParse(t, strings.Replace(minimal, "source: { bootstrap: [127.0.0.1:19092] }", "source: { bootstrap: [127.0.0.1:19092], sasl: {mechanism: OAUTHBEARER, token_endpoint: {url: https://idp/token, client_id: kp, client_secret_file: /run/s, scopes: [kafka]}} }", 1))
	mustParse(t, minimal+"listeners: [{listen: 127.0.0.1:9093, sasl: {oauthbearer: {jwks_url: https://idp/jwks, jwks_refresh: 5m}}}]\n")
}

func TestAdminMTLSCountsAsProtection(t *testing.T) {
	mustParse(t, minimal+"admin: { address: 0.0.0.0:9644, tls: { cert_file: c, key_file: k, client_ca_file: ca } }\n")
	mustParse(t, minimal+"admin: { address: 0.0.0.0:9644, token_file: t, tls: { cert_file: c, key_file: k } }\n")
	for _, doc := range []string{
		"admin: { address: 0.0.0.0:9644, tls: { cert_file: c, key_file: k } }\n",
		"admin: { address: 0.0.0.0:9644, token_file: t }\n", // a token in clear over the network
	} {
		if _, err := Parse([]byte(minimal + doc)); err == nil {
			t.Errorf("accepted off loopback: %s", doc)
		}
	}
}

func TestTxnPolicyValidation(t *testing.T) {
	c := mustParse(t, minimal+"policy:\n  transactional_ids:\n    - { principals: [\"app-*\"], ids: [\"orders-tx-*\"] }\n")
	if len(c.Policy.TransactionalIDs) != 1 || c.Policy.TransactionalIDs[0].IDs[0] != "orders-tx-*" {
		t.Fatalf("policy %+v", c.Policy)
	}
	if _, err := Parse([]byte(minimal + "policy:\n  transactional_ids:\n    - { principals: [a] }\n")); err == nil || !strings.Contains(err.Error(), "policy.transactional_ids[0].ids") {
		t.Errorf("rule without ids: %v", err)
	}
}

func TestPassthroughValidation(t *testing.T) {
	src := "source: { bootstrap: [127.0.0.1:19092] }"
	with := func(cluster, listeners string) string {
		return strings.Replace(minimal, src, cluster, 1) + listeners
	}
	scramListener := "listeners: [{name: scram, listen: 127.0.0.1:9093, sasl: {users_file: u.yaml}}]\n"
	plainListener := "listeners: [{name: plainsasl, listen: 127.0.0.1:9093, sasl: {users_file: u.yaml, mechanisms: [PLAIN]}}]\n"
	noLegacy := func(s string) string { return strings.Replace(s, "listen: 127.0.0.1:9092\n", "", 1) }
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown identity", with("source: { bootstrap: [127.0.0.1:19092], identity: mine }", ""), `clusters.source.identity (line 4): unknown identity "mine"`},
		{"map without passthrough", with("source: { bootstrap: [127.0.0.1:19092], passthrough: {bob: {mechanism: PLAIN, username: b, password_env: B}} }", ""), "only used with identity: passthrough"},
		{"SCRAM listener, nothing mapped", noLegacy(with("source: { bootstrap: [127.0.0.1:19092], identity: passthrough }", scramListener)), `listener "scram" offers SCRAM-SHA-256, which cannot be passed through`},
		{"plaintext listener, nothing mapped", with("source: { bootstrap: [127.0.0.1:19092], identity: passthrough }", plainListener), `listener "plaintext" has no SASL`},
		{"PLAIN-only listener", noLegacy(with("source: { bootstrap: [127.0.0.1:19092], identity: passthrough }", plainListener)), ""},
		{"SCRAM listener with a map", noLegacy(with("source: { bootstrap: [127.0.0.1:19092], identity: passthrough, passthrough: {bob: {mechanism: SCRAM-SHA-512, username: bob, password_file: /run/bob}} }", scramListener)), ""},
		{"mapped credential without a secret", noLegacy(with("source: { bootstrap: [127.0.0.1:19092], identity: passthrough, passthrough: {bob: {mechanism: PLAIN, username: bob}} }", scramListener)), "clusters.source.passthrough.bob (line 3): set exactly one of password_file and password_env"},
	} {
		_, err := Parse([]byte(tc.yaml))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	a := mustParse(t, noLegacy(with("source: { bootstrap: [127.0.0.1:19092], identity: passthrough }", plainListener)))
	b := mustParse(t, noLegacy(with("source: { bootstrap: [127.0.0.1:19092] }", plainListener)))
	if got := strings.Join(RestartRequired(a, b), "\n"); !strings.Contains(got, "clusters.source.identity") {
		t.Errorf("restart-required: %q", got)
	}
}
