package config

import (
	"strings"
	"testing"
)

// The advertised addresses of a StatefulSet's pods differ only by the pod
// name, which Kubernetes gives each pod in its environment.
func TestAdvertiseExpandsEnvironment(t *testing.T) {
	env := map[string]string{"POD_NAME": "kproxy-2", "NS": "kafka"}
	lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	t.Cleanup(func() { lookupEnv = defaultLookupEnv })

	c := mustParse(t, `listen: 0.0.0.0:9092
advertise: ${POD_NAME}.kproxy-headless.${NS}.svc:9092
listeners:
  - { name: internal, listen: 0.0.0.0:9094, advertise: "${POD_NAME}.kproxy-headless:9094" }
clusters: { source: { bootstrap: [s:9092] } }
routes: { default: source }
`)
	if c.Advertise != "kproxy-2.kproxy-headless.kafka.svc:9092" {
		t.Errorf("advertise = %q", c.Advertise)
	}
	if got := c.Listeners[0].Advertise; got != "kproxy-2.kproxy-headless:9094" {
		t.Errorf("listeners[0].advertise = %q", got)
	}

	_, err := Parse([]byte(`listen: 0.0.0.0:9092
advertise: ${UNSET_NAME}.kproxy:9092
clusters: { source: { bootstrap: [s:9092] } }
routes: { default: source }
`))
	if err == nil || !strings.Contains(err.Error(), "advertise") || !strings.Contains(err.Error(), "UNSET_NAME") {
		t.Fatalf("unset variable: got %v, want an error naming advertise and UNSET_NAME", err)
	}

	// Only advertised addresses expand: a ${...} elsewhere stays literal
	// (here it makes cluster_id odd, not the environment's value).
	c = mustParse(t, "listen: 127.0.0.1:9092\ncluster_id: ${POD_NAME}\nclusters: { source: { bootstrap: [s:9092] } }\nroutes: { default: source }\n")
	if c.ClusterID != "${POD_NAME}" {
		t.Errorf("cluster_id = %q, want it literal", c.ClusterID)
	}
}
