package proxy

import (
	"strconv"
	"testing"

	mbr "github.com/kproxy/kproxy/membership"
)

// A client of a named listener (a TLS one, say) is sent to the other
// instances' listener of the same name; a listener they do not name, or no
// listener, gets their first advertised address.
func TestInstanceEndpointFollowsTheListenerName(t *testing.T) {
	s := &Server{opts: Options{NodeID: 7}, advHost: "a.example", advPort: 9092}
	err := s.SetInstances(&Instances{Self: "a", LeaderID: "a", Members: []mbr.Member{
		{ID: "a", NodeID: 7, Advertise: "a.example:9092", Listeners: []mbr.Listener{{Name: "plain", Advertise: "a.example:9092"}, {Name: "tls", Advertise: "a.example:9093"}}},
		{ID: "b", NodeID: 8, Advertise: "b.example:9092", Listeners: []mbr.Listener{{Name: "plain", Advertise: "b.example:9092"}, {Name: "tls", Advertise: "b.example:9093"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := func(l *listener) map[int32]string {
		out := map[int32]string{}
		s.brokerEndpoints(l, func(node int32, host string, port int32) { out[node] = host + ":" + strconv.Itoa(int(port)) })
		return out
	}
	tls := got(&listener{opts: Listener{Name: "tls"}})
	if tls[7] != "a.example:9093" || tls[8] != "b.example:9093" {
		t.Fatalf("tls listener: %v", tls)
	}
	for _, l := range []*listener{nil, {opts: Listener{Name: "other"}}} {
		if d := got(l); d[7] != "a.example:9092" || d[8] != "b.example:9092" {
			t.Fatalf("listener %v: %v", l, d)
		}
	}
	if err := s.SetInstances(&Instances{Self: "a", Members: []mbr.Member{{ID: "b", Advertise: "no-port"}}}); err == nil {
		t.Fatal("a view with an address without a port was installed")
	}
	if tls := got(&listener{opts: Listener{Name: "tls"}}); len(tls) != 2 {
		t.Fatalf("the refused view replaced the last one: %v", tls)
	}
}
