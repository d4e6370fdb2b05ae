package control

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kproxy/kproxy/config"
)

// /readyz follows the routes: with the target down, kproxy is ready while
// every route and group home names the source, and not ready (naming the
// target) once a route sends a topic's clients there. It used to require
// every configured cluster, so a target outage took a source-only kproxy
// out of its load balancer.
func TestReadyzFollowsTheRoutes(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "a"))
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dead, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	parse := func(route string) *config.Config {
		cfg, err := config.Parse(fmt.Appendf(nil, "listen: %s\nadmin: %s\nstate_dir: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    b: %s\nlimits: { start_grace: 100ms }\n",
			listen, admin, state, src.ListenAddrs()[0], dead, route))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := Start(ctx, parse("source"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Fatalf("routes on the source, target down: %d %s", code, body)
	}
	st := inst.Status()
	if !st.Ready || strings.Join(st.Needed, ",") != "source" {
		t.Fatalf("/status: ready %v, needed %v (%s)", st.Ready, st.Needed, st.NotReady)
	}
	var tgtHealth string
	for _, c := range st.Proxy.Clusters {
		if c.Name == "target" && !c.Reachable {
			tgtHealth = "unreachable"
		}
	}
	if tgtHealth == "" {
		t.Fatalf("/status does not show the target unreachable: %+v", st.Proxy.Clusters)
	}

	inst.Apply(parse("target"))
	if e := inst.LastReloadError(); e != "" {
		t.Fatal(e)
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "target") {
		t.Fatalf("a route to the down target: /readyz %d %q", code, body)
	}
	if st := inst.Status(); st.Ready || strings.Join(st.Needed, ",") != "source,target" || st.NotReady == "" {
		t.Fatalf("/status with a route to the down target: ready %v, needed %v (%q)", st.Ready, st.Needed, st.NotReady)
	}
}
