package config

import (
	"strings"
	"testing"
	"time"
)

// Without control: one instance, nothing about instances set.
func TestControlIsOffByDefault(t *testing.T) {
	c := mustParse(t, minimal)
	if c.Control != nil || c.Instance.ID != "" {
		t.Fatalf("control %+v, instance %+v; want none", c.Control, c.Instance)
	}
}

func TestControlDefaults(t *testing.T) {
	env := map[string]string{"POD_NAME": "kproxy-2"}
	lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	t.Cleanup(func() { lookupEnv = defaultLookupEnv })

	c := mustParse(t, minimal+"cluster_id: shop\ninstance:\n  id: ${POD_NAME}\ncontrol: {}\n")
	want := Control{Cluster: Target, Group: "_kproxy-shop", SessionTimeout: DefaultControlSessionTimeout}
	if c.Instance.ID != "kproxy-2" || c.Control == nil || *c.Control != want {
		t.Fatalf("instance %q control %+v; want kproxy-2 and %+v", c.Instance.ID, c.Control, want)
	}
	// With only a source, the source is the control cluster.
	only := strings.Replace(minimal, "  target: { bootstrap: [127.0.0.1:29092] }\n", "", 1)
	c = mustParse(t, only+"instance: { id: a }\ncontrol: { group: g, session_timeout: 30s }\n")
	if *c.Control != (Control{Cluster: Source, Group: "g", SessionTimeout: 30 * time.Second}) {
		t.Fatalf("control %+v", *c.Control)
	}
}

// With control, replicate is accepted (each partition's copy is fenced by
// the broker), and so are routes off the source (cutovers run through the
// control topic), and so are group homes off the source (group moves run
// through the control topic too).
func TestControlWithReplicate(t *testing.T) {
	c := mustParse(t, minimal+"  topics: { orders: source }\nreplicate: [orders]\nstate_dir: /tmp/kproxy-state\ngroups: { default: source }\ninstance: { id: a }\ncontrol: {}\n")
	if len(c.Replicate) != 1 || c.Control == nil {
		t.Fatalf("replicate %v control %+v", c.Replicate, c.Control)
	}
	c = mustParse(t, minimal+"  topics: { orders: { produce: target, fetch: target } }\nreplicate: [orders]\nstate_dir: /tmp/kproxy-state\nreplication: { reverse_after_cutover: true }\ninstance: { id: a }\ncontrol: {}\n")
	if p, f := c.Routes.Topics["orders"].Effective(c.Routes.Default); p != Target || f != Target {
		t.Fatalf("orders routed produce %s fetch %s, want the target", p, f)
	}
	c = mustParse(t, minimal+"replicate: [orders]\nstate_dir: /tmp/kproxy-state\ngroups: { default: target, g1: source }\ninstance: { id: a }\ncontrol: {}\n")
	if c.Groups.Default != Target || c.Groups.Homes["g1"] != Source {
		t.Fatalf("groups %+v", c.Groups)
	}
}

func TestControlRejects(t *testing.T) {
	only := strings.Replace(minimal, "  target: { bootstrap: [127.0.0.1:29092] }\n", "", 1)
	for _, tc := range []struct{ name, yaml, want string }{
		{"no instance id", minimal + "control: {}\n", "instance.id: required with control"},
		{"an instance id without control", minimal + "instance: { id: a }\n", "is used only with a control section"},
		{"an unknown control cluster", minimal + "instance: { id: a }\ncontrol: { cluster: tagret }\n", `unknown cluster "tagret"`},
		{"a control cluster not configured", only + "instance: { id: a }\ncontrol: { cluster: target }\n", "names the target cluster, which is not configured"},
		{"a session timeout out of range", minimal + "instance: { id: a }\ncontrol: { session_timeout: 10ms }\n", "must be from 1s to 30m"},
		{"node_id with control", minimal + "node_id: 3\ninstance: { id: a }\ncontrol: {}\n", "is derived from instance.id"},
		{"a read of the copy with control and replicate", minimal + "  topics: { orders: { produce: source, fetch: target } }\nreplicate: [orders]\ninstance: { id: a }\ncontrol: {}\n", "routes.topics.orders.fetch"},
		{"a canary read of the copy with control and replicate", minimal + "  topics: { orders: { canary: { fetch: target, percent: 10 } } }\nreplicate: [orders]\ninstance: { id: a }\ncontrol: {}\n", "is not coordinated across instances yet"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Joining or leaving the multi-instance mode, or changing identity, is a
// restart.
func TestControlChangesNeedARestart(t *testing.T) {
	a := mustParse(t, minimal)
	b := mustParse(t, minimal+"instance: { id: a }\ncontrol: {}\n")
	r := RestartRequired(a, b)
	if len(r) != 2 || !strings.HasPrefix(r[0], "instance.id:") || !strings.HasPrefix(r[1], "control:") {
		t.Fatalf("RestartRequired = %q", r)
	}
}
