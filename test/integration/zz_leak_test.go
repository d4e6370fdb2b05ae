package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// No response kproxy sent to any client during the run names an upstream
// broker: no upstream port (as a number or as text), no upstream host:port,
// no upstream cluster id, and every node id in Metadata, FindCoordinator and
// DescribeCluster answers is kproxy's own. Runs after the client matrix: go
// test runs tests in the order of their files' names, hence zz_.
func TestZZNoUpstreamIdentityReachesClients(t *testing.T) {
	got := frames.all()
	if len(got) < 100 {
		t.Fatalf("only %d response frames captured; run with the client matrix", len(got))
	}
	type upstream struct{ addr, clusterID string }
	var ups []upstream
	for _, boot := range []string{env.source, env.target} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(boot))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		cancel()
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range md.Brokers {
			ups = append(ups, upstream{net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), *md.ClusterID})
		}
	}
	counts := map[int16]int{}
	for _, f := range got {
		counts[f.key]++
		for _, u := range ups {
			_, port, _ := net.SplitHostPort(u.addr)
			pn, _ := strconv.Atoi(port)
			if bytes.Contains(f.frame, binary.BigEndian.AppendUint32(nil, uint32(pn))) {
				t.Errorf("%s v%d response carries upstream port %d as an int32", kmsg.NameForKey(f.key), f.version, pn)
			}
			if bytes.Contains(f.frame, []byte(port)) && f.key != kmsg.Fetch.Int16() {
				// Fetch frames carry record payloads, which may contain digits.
				t.Errorf("%s v%d response carries upstream port %s as text", kmsg.NameForKey(f.key), f.version, port)
			}
			if bytes.Contains(f.frame, []byte(u.clusterID)) {
				t.Errorf("%s v%d response carries upstream cluster id %s", kmsg.NameForKey(f.key), f.version, u.clusterID)
			}
		}
		checkNodeIDs(t, f)
	}
	t.Logf("checked %d response frames: %v", len(got), counts)
	for _, k := range []kmsg.Key{kmsg.Metadata, kmsg.Produce, kmsg.Fetch, kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.OffsetCommit} {
		if counts[k.Int16()] == 0 {
			t.Errorf("no %s response was captured; the matrix did not exercise it", kmsg.NameForKey(k.Int16()))
		}
	}
}

// checkNodeIDs decodes address-bearing responses and checks every node id.
func checkNodeIDs(t *testing.T, f capturedFrame) {
	t.Helper()
	resp := kmsg.ResponseForKey(f.key)
	resp.SetVersion(f.version)
	body := f.frame[8:] // size, correlation id
	if resp.IsFlexible() && f.key != kmsg.ApiVersions.Int16() {
		body = body[1:]
	}
	switch f.key {
	case kmsg.Metadata.Int16(), kmsg.FindCoordinator.Int16(), kmsg.DescribeCluster.Int16():
	default:
		return
	}
	if err := resp.ReadFrom(body); err != nil {
		t.Errorf("captured %s v%d does not decode: %v", kmsg.NameForKey(f.key), f.version, err)
		return
	}
	const self = 4242
	bad := func(what string, id int32) {
		if id >= 0 && id != self {
			t.Errorf("%s v%d: %s is node %d, not kproxy's %d", kmsg.NameForKey(f.key), f.version, what, id, self)
		}
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for _, b := range r.Brokers {
			bad("broker", b.NodeID)
		}
		bad("controller", r.ControllerID)
		for _, tp := range r.Topics {
			for _, p := range tp.Partitions {
				bad("leader", p.Leader)
				for _, id := range append(append(p.Replicas, p.ISR...), p.OfflineReplicas...) {
					bad("replica", id)
				}
			}
		}
	case *kmsg.FindCoordinatorResponse:
		if r.Version < 4 { // v4+ carries coordinators in the list only
			bad("coordinator", r.NodeID)
		}
		for _, c := range r.Coordinators {
			bad("coordinator", c.NodeID)
		}
	case *kmsg.DescribeClusterResponse:
		bad("controller", r.ControllerID)
		for _, b := range r.Brokers {
			bad("broker", b.NodeID)
		}
	}
}
