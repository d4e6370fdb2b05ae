package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Listener is one address kproxy accepts Kafka clients on (listeners:).
// The old top-level listen/advertise pair still works and is a plaintext
// listener named "plaintext". docs/security.md has examples.
type Listener struct {
	// Name identifies the listener in logs and metrics.
	// Default "listener-<index>".
	Name string `yaml:"name"`

	// Listen is the host:port to accept clients on. Required.
	Listen string `yaml:"listen"`

	// Advertise is the host:port clients of this listener are told to
	// connect to. Default: Listen; required when Listen's host is empty,
	// 0.0.0.0 or ::.
	Advertise string `yaml:"advertise"`

	// TLS, when set, makes this a TLS listener. Default: plaintext.
	TLS *ServerTLS `yaml:"tls"`

	// SASL, when set, requires clients to authenticate with SASL before
	// any request but ApiVersions, SaslHandshake and SaslAuthenticate.
	SASL *ServerSASL `yaml:"sasl"`
}

// ServerTLS is the TLS side of a listener.
type ServerTLS struct {
	// CertFile and KeyFile are PEM files with the server certificate
	// (chain) and its private key. Required. Both are re-read when they
	// change on disk (checked at most once a second, at handshakes), so a
	// renewed certificate is served without a restart; a pair that fails
	// to load keeps the previous one and logs an error.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	// MinVersion is the lowest TLS version accepted: "1.2" or "1.3".
	// Default "1.2".
	MinVersion string `yaml:"min_version"`

	// ClientCAFile, when set, is a PEM bundle of the CAs client
	// certificates must chain to (mTLS): a client without a valid
	// certificate fails the handshake. Default "" (no client certificate
	// asked for).
	ClientCAFile string `yaml:"client_ca_file"`

	// PrincipalMapping turns an mTLS client's certificate subject (RFC 2253
	// form, e.g. "CN=app1,OU=payments,O=Example") into its principal, like
	// Kafka's ssl.principal.mapping.rules: the first rule whose pattern
	// matches wins; with no match the principal is the whole subject.
	// A client that also authenticates with SASL takes the SASL principal.
	PrincipalMapping []PrincipalRule `yaml:"principal_mapping"`
}

// PrincipalRule is one principal mapping rule.
type PrincipalRule struct {
	// Pattern is a Go regular expression matched against the subject.
	Pattern string `yaml:"pattern"`
	// Principal is the replacement, with $1... for the pattern's groups.
	Principal string `yaml:"principal"`
	// Case is "" (as is), "lower" or "upper".
	Case string `yaml:"case"`
}

// SASL mechanisms kproxy speaks on either side.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = "SCRAM-SHA-256"
	MechScramSHA512 = "SCRAM-SHA-512"
	MechOAuthBearer = "OAUTHBEARER"
)

var knownMechanisms = []string{MechPlain, MechScramSHA256, MechScramSHA512, MechOAuthBearer}

// usersMechanisms are the mechanisms checked against the users file.
var usersMechanisms = []string{MechPlain, MechScramSHA256, MechScramSHA512}

// ServerSASL is the SASL side of a listener.
type ServerSASL struct {
	// Mechanisms are the ones offered, from PLAIN, SCRAM-SHA-256,
	// SCRAM-SHA-512 and OAUTHBEARER. Default: the first three when
	// users_file is set, and OAUTHBEARER when oauthbearer is.
	Mechanisms []string `yaml:"mechanisms"`

	// UsersFile is the YAML file of users and their salted SCRAM
	// credentials (docs/security.md; `kproxy-users` writes entries). It
	// holds no cleartext password: PLAIN is checked against the SCRAM
	// entry. Re-read when it changes on disk. Required for PLAIN and SCRAM.
	UsersFile string `yaml:"users_file"`

	// OAuthBearer validates OAUTHBEARER tokens as JWTs. Required for
	// OAUTHBEARER.
	OAuthBearer *OAuthBearer `yaml:"oauthbearer"`

	// MaxReauth is Kafka's connections.max.reauth.ms: the session
	// lifetime reported in SaslAuthenticate v1+ (KIP-368); a connection
	// that has not re-authenticated by then is closed at its next request.
	// A Go duration, 0 or at least 1s; default 0 (sessions do not expire).
	MaxReauth time.Duration `yaml:"max_reauth"`
}

// OAuthBearer is how a listener validates OAUTHBEARER tokens: JWTs signed
// by a key of a JWKS file.
type OAuthBearer struct {
	// JWKSFile is a JWKS document (RFC 7517) with the issuer's public
	// signing keys (RSA or EC). Re-read when it changes. Exactly one of
	// jwks_file and jwks_url is required.
	JWKSFile string `yaml:"jwks_file"`
	// JWKSURL is the issuer's JWKS endpoint (https://). Fetched at start
	// (a failure stops the start), again every jwks_refresh, and when a
	// token names a key id it does not know (at most once per 30 s, so a
	// client sending made-up key ids cannot make kproxy hammer the
	// issuer). A failed refresh keeps the keys it has.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSCAFile is a PEM bundle the JWKS endpoint's certificate must
	// chain to. Default: the system roots.
	JWKSCAFile string `yaml:"jwks_ca_file"`
	// JWKSRefresh is how old fetched keys may get. Default 15m.
	JWKSRefresh time.Duration `yaml:"jwks_refresh"`
	// Issuer is the iss a token must carry. Default "" (not checked).
	Issuer string `yaml:"issuer"`
	// Audience is a value the token's aud must hold. Default "" (not
	// checked).
	Audience string `yaml:"audience"`
	// ClockSkew is the leeway for exp, nbf and iat. Default 30s.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// PrincipalClaim is the claim that names the principal. Default "sub".
	PrincipalClaim string `yaml:"principal_claim"`
}

// DefaultClockSkew is OAuthBearer.ClockSkew's default.
const DefaultClockSkew = 30 * time.Second

// ClientTLS is how kproxy reaches a cluster over TLS.
type ClientTLS struct {
	// CAFile is a PEM bundle of the CAs the brokers' certificates must
	// chain to. Default: the system roots.
	CAFile string `yaml:"ca_file"`

	// CertFile and KeyFile are kproxy's client certificate and key, for
	// brokers that require mTLS. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	// ServerName is the name the brokers' certificates must carry.
	// Default: the host of the address dialed.
	ServerName string `yaml:"server_name"`
}

// ClientSASL is kproxy's own SASL identity on a cluster. The password is
// never written in the config: it comes from a file or an environment
// variable, and validate, status and logs never show it.
type ClientSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
	// Required.
	Mechanism string `yaml:"mechanism"`

	// TokenFile (re-read at every authentication, so an external agent
	// can refresh it) or TokenEnv holds the OAUTHBEARER token; exactly
	// one of them or token_endpoint for OAUTHBEARER, where username and
	// password are not used.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`

	// TokenEndpoint gets OAUTHBEARER tokens from an OAuth 2.0 token
	// endpoint with the client-credentials grant (RFC 6749 4.4).
	TokenEndpoint *TokenEndpoint `yaml:"token_endpoint"`

	// Username is kproxy's user name (not a secret). Required, unless
	// UsernameEnv names where it is.
	Username    string `yaml:"username"`
	UsernameEnv string `yaml:"username_env"`

	// PasswordFile is a file holding the password (a trailing newline is
	// ignored); PasswordEnv names an environment variable holding it.
	// Exactly one is required.
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

// TokenEndpoint is an OAuth 2.0 client-credentials token endpoint. A token
// is cached and fetched again a minute before it expires.
type TokenEndpoint struct {
	// URL is the token endpoint (https://). Required.
	URL string `yaml:"url"`
	// ClientID is kproxy's client id (not a secret). Required.
	ClientID string `yaml:"client_id"`
	// ClientSecretFile or ClientSecretEnv holds the client secret;
	// exactly one. Read at start.
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	// Scopes are requested with each token. Default none.
	Scopes []string `yaml:"scopes"`
	// CAFile is a PEM bundle the endpoint's certificate must chain to.
	// Default: the system roots.
	CAFile string `yaml:"ca_file"`
}

// AdminHTTP configures the admin HTTP server. In YAML, `admin: host:port`
// sets only Address; the map form sets any field.
type AdminHTTP struct {
	// Address is the host:port of the admin server (/metrics, /status,
	// /healthz, /readyz). Default "" (no admin server).
	Address string `yaml:"address"`

	// MetricsAddress, when set, also serves /metrics (and only that) on
	// its own host:port, plain HTTP without a token: Prometheus can scrape
	// it while the admin address is protected (or absent). The metrics
	// carry no secret, but they do name principals (policy denials), so
	// keep it on a network only the scraper reaches. Default "" (metrics
	// only on the admin address).
	MetricsAddress string `yaml:"metrics_address"`

	// Pprof serves /debug/pprof (CPU profiles and traces). Default false.
	Pprof bool `yaml:"pprof"`

	// TokenFile holds the bearer token every admin request except
	// /healthz and /readyz must carry ("Authorization: Bearer <token>").
	// Off loopback, TLS with a token or with client certificates is
	// required, unless Insecure is set.
	TokenFile string `yaml:"token_file"`

	// Insecure allows an admin address off loopback with no token, on
	// purpose; kproxy warns at start. Default false.
	Insecure bool `yaml:"insecure"`

	// TLS serves the admin HTTP over TLS (HTTPS), with the same keys and
	// certificate reload as a listener's tls; client_ca_file makes it
	// mTLS. Default: plain HTTP.
	TLS *ServerTLS `yaml:"tls"`
}

// UnmarshalYAML accepts the short form (an address) and the map form.
func (a *AdminHTTP) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*a = AdminHTTP{}
		return n.Decode(&a.Address)
	}
	type plain AdminHTTP
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*a = AdminHTTP(p)
	return nil
}

// IsLoopback reports whether host (from a host:port) reaches only this
// machine: "localhost" or a loopback IP. An empty host listens everywhere.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// EffectiveListeners is every listener kproxy opens: the top-level listen
// (a plaintext listener named "plaintext") followed by listeners:.
func (c *Config) EffectiveListeners() []Listener {
	var out []Listener
	if c.Listen != "" {
		out = append(out, Listener{Name: "plaintext", Listen: c.Listen, Advertise: c.Advertise})
	}
	return append(out, c.Listeners...)
}

var tlsVersions = map[string]bool{"": true, "1.2": true, "1.3": true}

func (c *Config) validateSecurity(v *validator) {
	ls := top("listeners")
	names := map[string]bool{}
	if c.Listen != "" {
		names["plaintext"] = true
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		p := ls.index(i)
		if l.Name == "" {
			l.Name = fmt.Sprintf("listener-%d", i) // a default the duplicate check needs
		}
		if names[l.Name] {
			v.add(p.key("name"), "listener name %q is used twice", l.Name)
		}
		names[l.Name] = true
		host, ok := v.hostPort(p.key("listen"), l.Listen, hostOptional)
		if l.Advertise != "" {
			v.hostPort(p.key("advertise"), l.Advertise, hostDialable)
		} else if ok && unspecifiedHost(host) {
			v.add(p.key("advertise"), "required when listen's host is %q, which clients cannot connect to", host)
		}
		if t := l.TLS; t != nil {
			tp := p.key("tls")
			if t.CertFile == "" {
				v.add(tp.key("cert_file"), "required (PEM certificate file)")
			}
			if t.KeyFile == "" {
				v.add(tp.key("key_file"), "required (PEM private key file)")
			}
			if !tlsVersions[t.MinVersion] {
				v.add(tp.key("min_version"), "unknown TLS version %q (want 1.2 or 1.3)", t.MinVersion)
			}
			for j, r := range t.PrincipalMapping {
				rp := tp.key("principal_mapping").index(j)
				if _, err := regexp.Compile(r.Pattern); err != nil || r.Pattern == "" {
					v.add(rp.key("pattern"), "not a regular expression: %q", r.Pattern)
				}
				if r.Principal == "" {
					v.add(rp.key("principal"), "required (the replacement, e.g. \"$1\")")
				}
				if r.Case != "" && r.Case != "lower" && r.Case != "upper" {
					v.add(rp.key("case"), "unknown case %q (want lower or upper)", r.Case)
				}
			}
			if len(t.PrincipalMapping) > 0 && t.ClientCAFile == "" {
				v.add(tp.key("principal_mapping"), "needs client_ca_file: without mTLS there is no client certificate to map")
			}
		}
		if s := l.SASL; s != nil {
			sp := p.key("sasl")
			if s.UsersFile == "" && s.OAuthBearer == nil {
				v.add(sp.key("users_file"), "required (the users file SASL clients authenticate against), or configure oauthbearer")
			}
			for j, m := range s.Mechanisms {
				switch {
				case !slices.Contains(knownMechanisms, m):
					v.add(sp.key("mechanisms").index(j), "unknown mechanism %q (want %s)", m, strings.Join(knownMechanisms, ", "))
				case m == MechOAuthBearer && s.OAuthBearer == nil:
					v.add(sp.key("mechanisms").index(j), "OAUTHBEARER needs the oauthbearer section (jwks_file...)")
				case m != MechOAuthBearer && s.UsersFile == "":
					v.add(sp.key("mechanisms").index(j), "%s needs users_file", m)
				}
			}
			if o := s.OAuthBearer; o != nil {
				op := sp.key("oauthbearer")
				if (o.JWKSFile == "") == (o.JWKSURL == "") {
					v.add(op.key("jwks_file"), "set exactly one of jwks_file and jwks_url (the issuer's public keys)")
				}
				if o.JWKSURL != "" {
					if u, err := url.Parse(o.JWKSURL); err != nil || u.Scheme != "https" || u.Host == "" {
						v.add(op.key("jwks_url"), "must be an https:// URL, got %q", o.JWKSURL)
					}
				}
				if o.JWKSRefresh < 0 || o.JWKSRefresh > 0 && o.JWKSRefresh < time.Minute {
					v.add(op.key("jwks_refresh"), "must be at least 1m, got %s", o.JWKSRefresh)
				}
				if o.ClockSkew < 0 {
					v.add(sp.key("oauthbearer").key("clock_skew"), "must be >= 0, got %s", o.ClockSkew)
				}
			}
			if s.MaxReauth < 0 || s.MaxReauth > 0 && s.MaxReauth < time.Second {
				v.add(sp.key("max_reauth"), "must be 0 (no limit) or at least 1s, got %s", s.MaxReauth)
			}
		}
	}
	if c.Listen == "" && len(c.Listeners) == 0 {
		v.add(top("listen"), "required (host:port), or list listeners:")
	}

	for _, name := range []Cluster{Source, Target} {
		cc := c.Clusters.Get(name)
		if cc == nil {
			continue
		}
		cp := top("clusters").key(string(name))
		if t := cc.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
			v.add(cp.key("tls"), "cert_file and key_file go together")
		}
		if s := cc.SASL; s != nil {
			validateClientSASL(v, cp.key("sasl"), s)
		}
		switch cc.Identity {
		case "", IdentityService:
			if len(cc.Passthrough) > 0 {
				v.add(cp.key("passthrough"), "only used with identity: passthrough")
			}
		case IdentityPassthrough:
			for _, p := range sortedKeys(cc.Passthrough) {
				s := cc.Passthrough[p]
				if p == "" {
					v.add(cp.key("passthrough"), "a principal name is empty")
				}
				validateClientSASL(v, cp.key("passthrough").key(p), &s)
			}
			c.validatePassthroughClients(v, cp, cc)
		default:
			v.add(cp.key("identity"), "unknown identity %q (want service or passthrough)", cc.Identity)
		}
	}

	a := c.AdminHTTP
	if t := a.TLS; t != nil {
		tp := top("admin").key("tls")
		if t.CertFile == "" || t.KeyFile == "" {
			v.add(tp, "cert_file and key_file are required")
		}
		if !tlsVersions[t.MinVersion] {
			v.add(tp.key("min_version"), "unknown TLS version %q (want 1.2 or 1.3)", t.MinVersion)
		}
	}
	if a.MetricsAddress != "" {
		v.hostPort(top("admin").key("metrics_address"), a.MetricsAddress, hostOptional)
		if a.MetricsAddress == a.Address {
			v.add(top("admin").key("metrics_address"), "is the admin address itself; give /metrics its own host:port, or leave it out")
		}
	}
	if a.Address != "" {
		if host, ok := v.hostPort(top("admin"), a.Address, hostOptional); ok && !IsLoopback(host) && !a.Insecure && (a.TLS == nil || a.TokenFile == "" && a.TLS.ClientCAFile == "") {
			v.add(top("admin"), "%q is reachable from other machines: set admin.tls with admin.token_file (a bearer token) or admin.tls.client_ca_file (mTLS), or admin.insecure: true to run it unprotected on purpose", a.Address)
		}
	}
}

func validateClientSASL(v *validator, sp yamlPath, s *ClientSASL) {
	if !slices.Contains(knownMechanisms, s.Mechanism) {
		v.add(sp.key("mechanism"), "unknown mechanism %q (want %s)", s.Mechanism, strings.Join(knownMechanisms, ", "))
	}
	if s.Mechanism == MechOAuthBearer {
		n := 0
		for _, set := range []bool{s.TokenFile != "", s.TokenEnv != "", s.TokenEndpoint != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			v.add(sp, "set exactly one of token_file, token_env and token_endpoint (the token is never written in the config)")
		}
		if e := s.TokenEndpoint; e != nil {
			ep := sp.key("token_endpoint")
			if u, err := url.Parse(e.URL); err != nil || u.Scheme != "https" || u.Host == "" {
				v.add(ep.key("url"), "must be an https:// URL, got %q", e.URL)
			}
			if e.ClientID == "" {
				v.add(ep.key("client_id"), "required")
			}
			if (e.ClientSecretFile == "") == (e.ClientSecretEnv == "") {
				v.add(ep, "set exactly one of client_secret_file and client_secret_env (the secret is never written in the config)")
			}
		}
		return
	}
	if s.Username == "" && s.UsernameEnv == "" {
		v.add(sp.key("username"), "required (or username_env)")
	}
	if (s.PasswordFile == "") == (s.PasswordEnv == "") {
		v.add(sp, "set exactly one of password_file and password_env (the password is never written in the config)")
	}
}

// validatePassthroughClients refuses listeners whose clients a passthrough
// cluster could never carry upstream. A SCRAM exchange proves the client
// knows its password without sending it, so kproxy has nothing to replay:
// a SCRAM listener needs mapped credentials (passthrough:) for its SCRAM
// principals. A listener without SASL has no client credential at all,
// so its principals (mTLS subjects, or ANONYMOUS) need entries too.
// Principals the map lacks are refused at authentication (SCRAM) or at the
// TLS handshake (no SASL), with the reason in the log and, for SASL, in
// the client's SASL_AUTHENTICATION_FAILED message.
func (c *Config) validatePassthroughClients(v *validator, cp yamlPath, cc *ClusterConfig) {
	if len(cc.Passthrough) > 0 {
		return
	}
	for _, l := range c.EffectiveListeners() {
		if l.SASL == nil {
			v.add(cp.key("passthrough"), "listener %q has no SASL, so its clients bring no credential kproxy could pass through; map their principals (mTLS subjects or ANONYMOUS) to upstream credentials here, or use identity: service", l.Name)
			continue
		}
		mechs := l.SASL.Mechanisms
		if len(mechs) == 0 && l.SASL.UsersFile != "" {
			mechs = usersMechanisms
		}
		for _, m := range mechs {
			if m == MechScramSHA256 || m == MechScramSHA512 {
				v.add(cp.key("passthrough"), "listener %q offers %s, which cannot be passed through (a SCRAM exchange never reveals the password, so kproxy cannot replay it upstream); map the SCRAM principals to upstream credentials here, offer only PLAIN or OAUTHBEARER on that listener, or use identity: service", l.Name, m)
				break
			}
		}
	}
}

// ReadSecret returns the secret in file or in the environment variable env
// (whichever is set), without a trailing newline. Errors name the file or
// variable, never the content.
func ReadSecret(file, env string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading secret file: %w", err)
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return "", fmt.Errorf("secret file %s is empty", file)
		}
		return s, nil
	}
	s, ok := os.LookupEnv(env)
	if !ok || s == "" {
		return "", fmt.Errorf("environment variable %s is not set", env)
	}
	return s, nil
}

// securityChanges names the security settings that differ between old and
// new. They take effect only after a restart (the files they name, such as
// certificates and the users file, are re-read live).
func securityChanges(old, new *Config) []string {
	var out []string
	if !reflect.DeepEqual(old.Listeners, new.Listeners) {
		out = append(out, "listeners")
	}
	if !reflect.DeepEqual(old.AdminHTTP, new.AdminHTTP) && old.Admin == new.Admin {
		out = append(out, "admin")
	}
	for _, name := range []Cluster{Source, Target} {
		o, n := old.Clusters.Get(name), new.Clusters.Get(name)
		if o == nil || n == nil {
			continue
		}
		if !reflect.DeepEqual(o.TLS, n.TLS) {
			out = append(out, "clusters."+string(name)+".tls")
		}
		if !reflect.DeepEqual(o.SASL, n.SASL) {
			out = append(out, "clusters."+string(name)+".sasl")
		}
		if o.Identity != n.Identity {
			out = append(out, "clusters."+string(name)+".identity")
		}
		if !reflect.DeepEqual(o.Passthrough, n.Passthrough) {
			out = append(out, "clusters."+string(name)+".passthrough")
		}
	}
	return out
}

// Policy says what clients may do through kproxy. Without a policy key
// every API kproxy serves is forwarded with kproxy's upstream rights (the
// behaviour before policies existed). With one, the destructive admin APIs
// (AdminOperations) are refused unless a rule allows them for the
// client's principal. Hot-reloaded.
type Policy struct {
	// Admin lists who may use which destructive admin operations.
	// Default empty: nobody.
	Admin []AdminRule `yaml:"admin"`

	// Topics, with at least one rule, governs topic access: a principal
	// may produce to, fetch from or describe (see in Metadata) a topic
	// only as a rule allows. Default empty: topics are not governed.
	Topics []TopicRule `yaml:"topics"`

	// Groups, with at least one rule, governs consumer groups: a
	// principal may join, commit to, fetch offsets of, describe or find
	// the coordinator of a group only as a rule allows. Default empty.
	Groups []GroupRule `yaml:"groups"`

	// TransactionalIDs, with at least one rule, governs transactional
	// producers: InitProducerID with a transactional id, AddPartitionsToTxn,
	// AddOffsetsToTxn, EndTxn, TxnOffsetCommit and FindCoordinator for a
	// transaction need a rule for the id. Default empty.
	TransactionalIDs []TxnRule `yaml:"transactional_ids"`
}

// TxnRule allows principals to use some transactional ids.
type TxnRule struct {
	// Principals are names or globs, as in AdminRule. Required.
	Principals []string `yaml:"principals"`
	// IDs are transactional ids or globs (path.Match). Required.
	IDs []string `yaml:"ids"`
}

// GroupRule allows principals to use some consumer groups.
type GroupRule struct {
	// Principals are names or globs, as in AdminRule. Required.
	Principals []string `yaml:"principals"`
	// Groups are group ids or globs (path.Match). Required.
	Groups []string `yaml:"groups"`
	// Operations limit the rule to some group operations: read (join,
	// sync, heartbeat, leave, commit offsets), describe (find the
	// coordinator, fetch offsets, describe the group), delete
	// (DeleteGroups, OffsetDelete; these also need their admin rule), or
	// "*". Default: all of them.
	Operations []string `yaml:"operations"`
}

// GroupOperations are the group operations a policy governs.
var GroupOperations = []string{"read", "describe", "delete"}

// TopicRule allows principals some operations on some topics.
type TopicRule struct {
	// Principals are names or globs, as in AdminRule. Required.
	Principals []string `yaml:"principals"`
	// Topics are topic names or globs (path.Match). Required.
	Topics []string `yaml:"topics"`
	// Operations are produce, fetch, describe, create, alter, delete, or
	// "*". Required. docs/security.md lists the APIs each one governs.
	Operations []string `yaml:"operations"`
}

// TopicOperations are the topic operations a policy governs.
var TopicOperations = []string{"produce", "fetch", "describe", "create", "alter", "delete"}

// AdminRule allows principals some admin operations.
type AdminRule struct {
	// Principals are principal names or globs (path.Match syntax):
	// a SASL user, an mTLS principal, or ANONYMOUS for a client of a
	// listener without authentication. Required.
	Principals []string `yaml:"principals"`
	// Operations are names from AdminOperations, or "*" for all. Required.
	Operations []string `yaml:"operations"`
}

// AdminOperations are the destructive admin operations a policy governs,
// each named after its Kafka API.
var AdminOperations = []string{
	"delete_topics", "delete_records", "create_partitions", "alter_configs",
	"incremental_alter_configs", "create_acls", "delete_acls", "elect_leaders",
	"alter_client_quotas", "alter_user_scram_credentials", "delete_groups", "offset_delete",
}

func (c *Config) validatePolicy(v *validator) {
	if c.Policy == nil {
		return
	}
	pp := top("policy").key("admin")
	for i, r := range c.Policy.Admin {
		rp := pp.index(i)
		if len(r.Principals) == 0 {
			v.add(rp.key("principals"), "at least one principal or glob is required")
		}
		for j, p := range r.Principals {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				v.add(rp.key("principals").index(j), "not a principal or glob: %q", p)
			}
		}
		if len(r.Operations) == 0 {
			v.add(rp.key("operations"), "at least one operation is required (or \"*\")")
		}
		for j, op := range r.Operations {
			if op != "*" && !slices.Contains(AdminOperations, op) {
				v.add(rp.key("operations").index(j), "unknown operation %q (want one of %s, or *)", op, strings.Join(AdminOperations, ", "))
			}
		}
	}
	type globs struct {
		key   string
		globs []string
	}
	check := func(p yamlPath, fields ...globs) {
		for _, f := range fields {
			if len(f.globs) == 0 {
				v.add(p.key(f.key), "at least one name or glob is required")
			}
			for j, g := range f.globs {
				if _, err := path.Match(g, ""); err != nil || g == "" {
					v.add(p.key(f.key).index(j), "not a name or glob: %q", g)
				}
			}
		}
	}
	for i, r := range c.Policy.Groups {
		gp := top("policy").key("groups").index(i)
		check(gp, globs{"principals", r.Principals}, globs{"groups", r.Groups})
		for j, op := range r.Operations {
			if op != "*" && !slices.Contains(GroupOperations, op) {
				v.add(gp.key("operations").index(j), "unknown operation %q (want %s, or *)", op, strings.Join(GroupOperations, ", "))
			}
		}
	}
	for i, r := range c.Policy.TransactionalIDs {
		check(top("policy").key("transactional_ids").index(i), globs{"principals", r.Principals}, globs{"ids", r.IDs})
	}
	tp := top("policy").key("topics")
	for i, r := range c.Policy.Topics {
		rp := tp.index(i)
		for _, f := range []struct {
			key   string
			globs []string
		}{{"principals", r.Principals}, {"topics", r.Topics}} {
			key, globs := f.key, f.globs
			if len(globs) == 0 {
				v.add(rp.key(key), "at least one name or glob is required")
			}
			for j, g := range globs {
				if _, err := path.Match(g, ""); err != nil || g == "" {
					v.add(rp.key(key).index(j), "not a name or glob: %q", g)
				}
			}
		}
		if len(r.Operations) == 0 {
			v.add(rp.key("operations"), "at least one operation is required (or \"*\")")
		}
		for j, op := range r.Operations {
			if op != "*" && !slices.Contains(TopicOperations, op) {
				v.add(rp.key("operations").index(j), "unknown operation %q (want %s, or *)", op, strings.Join(TopicOperations, ", "))
			}
		}
	}
}
