package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// splitRoutes replicates t and u, both produced to the source, except t
// when tTo names another cluster.
func splitRoutes(t *testing.T, tTo string) Router {
	t.Helper()
	return tableFor(t, routesHeader+"state_dir: /nonexistent/unused\nreplicate: [t, u]\nroutes:\n  default: source\n  topics:\n    t: "+tTo+"\n")
}

// splitProduce is an acks=all produce naming each topic's partitions 2
// and 0, in that order, one record each.
func splitProduce(topics ...string) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(9)
	req.Acks, req.TimeoutMillis = -1, 10000
	for _, name := range topics {
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = name
		for _, p := range []int32{2, 0} {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition, rp.Records = p, oneRecordBatch()
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// A produce request naming a held topic and a free one is split: the free
// topic is written at once and counts as answered when its broker answers,
// while the held part waits; the one response merges both in the request's
// order. A later request on the same connection, whose response waits
// behind the held one, does not keep a cutover of its topic waiting either
// (its count used to end only when its response was built).
func TestHeldTopicIsSplitFromTheFreeTopicsOfAProduce(t *testing.T) {
	srv, src, tgt := twoClusterProxy(t, splitRoutes(t, Source), "t", "u")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	srv.HoldProduce("t")
	t.Cleanup(func() { srv.ReleaseProduce("t") }) // a failed test does not wedge the server's close
	r1, r2 := splitProduce("t", "u"), splitProduce("u")
	out := appendRequest(nil, 1, kmsg.StringPtr("split"), r1)
	out = appendRequest(out, 2, kmsg.StringPtr("split"), r2)
	nc := dialProxy(t, srv)
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}

	// The free topic is written and answered while t is held.
	waitUntil(t, "u's records of both requests on the source", func() bool { return countOn(t, src, "u") == 4 })
	if err := srv.WaitProduceIdle(ctx, "u"); err != nil {
		t.Fatalf("u's answered produce still counts in flight while t is held: %v", err)
	}
	if n := srv.HeldCount("t"); n != 1 {
		t.Fatalf("%d requests held for t, want 1", n)
	}
	if n := countOn(t, src, "t") + countOn(t, tgt, "t"); n != 0 {
		t.Fatalf("%d records of the held topic were written during the hold", n)
	}
	// Nothing is answered before the held part: responses leave in
	// request order, and the first one waits for t.
	_ = nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var one [1]byte
	if _, err := nc.Read(one[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the client got bytes before the held topic was released (err %v)", err)
	}
	_ = nc.SetReadDeadline(time.Time{})

	// The flip: t's held part goes to the target.
	srv.SetRouter(splitRoutes(t, Target))
	srv.ReleaseProduce("t")

	br := bufio.NewReader(nc)
	for _, want := range []struct {
		corr   int32
		req    *kmsg.ProduceRequest
		topics []string
	}{{1, r1, []string{"t", "u"}}, {2, r2, []string{"u"}}} {
		resp := readProduceAnswer(t, nc, br, want.corr, want.req)
		var got []string
		for _, rt := range resp.Topics {
			got = append(got, rt.Topic)
			var parts []int32
			for _, p := range rt.Partitions {
				if p.ErrorCode != 0 {
					t.Errorf("request %d, %s/%d: error %d", want.corr, rt.Topic, p.Partition, p.ErrorCode)
				}
				parts = append(parts, p.Partition)
			}
			if len(parts) != 2 || parts[0] != 2 || parts[1] != 0 {
				t.Errorf("request %d, topic %s: partitions answered in order %v, want the request's [2 0]", want.corr, rt.Topic, parts)
			}
		}
		if len(got) != len(want.topics) || got[0] != want.topics[0] {
			t.Errorf("request %d: topics answered in order %v, want the request's %v", want.corr, got, want.topics)
		}
	}
	if n := countOn(t, tgt, "t"); n != 2 {
		t.Fatalf("%d records of t on the target after the flip, want 2", n)
	}
	if n := countOn(t, src, "t"); n != 0 {
		t.Fatalf("%d records of t on the source, want 0", n)
	}
}

// readProduceAnswer reads one response frame and decodes it as req's
// answer.
func readProduceAnswer(t *testing.T, nc net.Conn, br *bufio.Reader, corr int32, req *kmsg.ProduceRequest) *kmsg.ProduceResponse {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	frame, err := readFrameInto(br, 1<<20, nil)
	if err != nil {
		t.Fatalf("reading answer %d: %v", corr, err)
	}
	body, err := responseBody(frame, corr, req.Key(), req.GetVersion())
	if err != nil {
		t.Fatal(err)
	}
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	if err := resp.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	return resp
}
