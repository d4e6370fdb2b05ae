package proxy

import (
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// plainFetches are Fetch requests of the shape decodeFetchPlain takes, at
// version v: a consumer's, with names or ids, a rack or none, one or more
// topics.
func plainFetches(v int16) []*kmsg.FetchRequest {
	mk := func(rack string, topics ...[]int32) *kmsg.FetchRequest {
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.IsolationLevel = v, 500, 1, 50<<20, 1
		req.SessionEpoch, req.Rack = -1, rack
		for i, parts := range topics {
			t := kmsg.NewFetchRequestTopic()
			t.Topic, t.TopicID = "topic-"+string(rune('a'+i)), [16]byte{byte(i + 1), 7}
			for _, p := range parts {
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, int64(p)*1000+3, 1<<20
				if v >= 9 {
					rp.CurrentLeaderEpoch = 4
				}
				if v >= 5 {
					rp.LogStartOffset = 2
				}
				t.Partitions = append(t.Partitions, rp)
			}
			req.Topics = append(req.Topics, t)
		}
		return req
	}
	return []*kmsg.FetchRequest{
		mk("", []int32{0, 1, 2, 3, 4, 5}),
		mk("rack-1", []int32{0}, []int32{3, 1}),
		mk("rack-1", []int32{0, 1, 2, 3, 4, 5, 6, 7, 8}, []int32{}, []int32{2}),
		mk("rack-1", []int32{5}),
		mk(""),
	}
}

// kmsgFetch is src decoded by kmsg alone, into a fresh request.
func kmsgFetch(t *testing.T, v int16, src []byte) *kmsg.FetchRequest {
	t.Helper()
	want := kmsg.NewPtrFetchRequest()
	want.Version = v
	if err := want.ReadFrom(src); err != nil {
		t.Fatalf("v%d: kmsg: %v", v, err)
	}
	return want
}

// sameFetch says whether a and b hold the same request, an empty array
// and none alike (kmsg leaves nil where a reused array is empty).
func sameFetch(a, b *kmsg.FetchRequest) bool {
	norm := func(r *kmsg.FetchRequest) kmsg.FetchRequest {
		c := *r
		c.Topics = nil
		for _, t := range r.Topics {
			if len(t.Partitions) == 0 {
				t.Partitions = nil
			}
			c.Topics = append(c.Topics, t)
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// The plain decoder takes a consumer's Fetch at every version kproxy
// accepts and decodes it to what kmsg does, into a request reused from
// requests of other sizes, names and racks; what it does not take (tags,
// forgotten topics, a replica's state, a cluster id) goes through kmsg, to
// the same result, through decodeRequest.
func TestDecodeFetchPlainMatchesKmsg(t *testing.T) {
	var reused kmsg.FetchRequest
	for v := int16(4); v <= 18; v++ {
		for round := range 2 {
			for i, req := range plainFetches(v) {
				src := req.AppendTo(nil)
				want := kmsgFetch(t, v, src)
				topics, rack := reused.Topics[:0], reused.Rack
				reused = kmsg.FetchRequest{Version: v, Topics: topics, Rack: rack}
				if !decodeFetchPlain(src, &reused) {
					t.Fatalf("v%d request %d: not taken", v, i)
				}
				if !sameFetch(&reused, want) {
					t.Fatalf("v%d request %d round %d:\n got %+v\nwant %+v", v, i, round, reused, *want)
				}
			}
		}
		others := map[string]func(*kmsg.FetchRequest){
			"partition tag": func(r *kmsg.FetchRequest) { r.Topics[0].Partitions[0].UnknownTags.Set(9, []byte{1}) },
			"topic tag":     func(r *kmsg.FetchRequest) { r.Topics[0].UnknownTags.Set(9, []byte{1}) },
			"top tag":       func(r *kmsg.FetchRequest) { r.UnknownTags.Set(9, []byte{1}) },
			"cluster id":    func(r *kmsg.FetchRequest) { r.ClusterID = kmsg.StringPtr("c") },
			"replica state": func(r *kmsg.FetchRequest) { r.ReplicaState.ID, r.ReplicaState.Epoch = 3, 8 },
			"forgotten": func(r *kmsg.FetchRequest) {
				r.ForgottenTopics = []kmsg.FetchRequestForgottenTopic{{Topic: "gone", TopicID: [16]byte{5}, Partitions: []int32{1}}}
			},
		}
		for name, edit := range others {
			req := plainFetches(v)[1]
			edit(req)
			src := req.AppendTo(nil)
			want := kmsgFetch(t, v, src)
			if sameFetch(want, kmsgFetch(t, v, plainFetches(v)[1].AppendTo(nil))) {
				continue // not in this version's encoding
			}
			topics, rack := reused.Topics[:0], reused.Rack
			reused = kmsg.FetchRequest{Version: v, Topics: topics, Rack: rack}
			if decodeFetchPlain(src, &reused) {
				t.Fatalf("v%d %s: taken", v, name)
			}
			reused = kmsg.FetchRequest{Version: v, Topics: reused.Topics[:0], Rack: "stale"}
			if _, err := decodeRequest(kbinReader(withHeaderTags(v, src)), &reused, false); err != nil {
				t.Fatalf("v%d %s: %v", v, name, err)
			}
			if !sameFetch(&reused, want) {
				t.Fatalf("v%d %s:\n got %+v\nwant %+v", v, name, reused, *want)
			}
		}
		// Cut short anywhere, a request is refused by kmsg as well.
		src := plainFetches(v)[1].AppendTo(nil)
		for n := range len(src) {
			fresh := kmsg.NewPtrFetchRequest()
			fresh.Version = v
			kerr := fresh.ReadFrom(src[:n])
			topics, rack := reused.Topics[:0], reused.Rack
			reused = kmsg.FetchRequest{Version: v, Topics: topics, Rack: rack}
			if decodeFetchPlain(src[:n], &reused) && (kerr != nil || !sameFetch(&reused, fresh)) {
				t.Fatalf("v%d: %d of %d bytes taken (kmsg: %v)", v, n, len(src), kerr)
			}
		}
	}
}

// A consumer's Fetch decoded into the connection's scratch allocates
// nothing once the scratch has held a request as large: kmsg's decode
// made each topic's partition array anew (and copied each topic name).
func TestFetchDecodeAllocatesNothing(t *testing.T) {
	for _, v := range []int16{11, 12, 16} {
		sc := &fetchScratch{}
		srcs := [][]byte{}
		for _, req := range plainFetches(v)[1:4] { // one rack, as a connection's

			srcs = append(srcs, withHeaderTags(v, req.AppendTo(nil)))
		}
		decode := func() {
			for _, src := range srcs {
				if _, err := decodeRequest(kbinReader(src), setVersion(sc.decodeInto(), v), false); err != nil {
					t.Fatal(err)
				}
			}
		}
		decode()
		if n := testing.AllocsPerRun(50, decode); n != 0 {
			t.Fatalf("v%d: %.1f allocations per 3 decodes", v, n)
		}
	}
}

// withHeaderTags is src after the request header's (empty) tag section,
// which decodeRequest skips first in a flexible version.
func withHeaderTags(v int16, src []byte) []byte {
	if v < 12 {
		return src
	}
	return append([]byte{0}, src...)
}

func setVersion(r *kmsg.FetchRequest, v int16) *kmsg.FetchRequest {
	r.SetVersion(v)
	return r
}

// FuzzDecodeFetchPlain: whatever the plain decoder takes, kmsg decodes to
// the same request.
func FuzzDecodeFetchPlain(f *testing.F) {
	for _, v := range []int16{4, 11, 12, 16, 18} {
		for _, req := range plainFetches(v) {
			f.Add(v, req.AppendTo(nil))
		}
	}
	f.Fuzz(func(t *testing.T, v int16, src []byte) {
		if v < 4 || v > 18 {
			return
		}
		reused := kmsg.FetchRequest{Version: v, Topics: plainFetches(18)[2].Topics[:0], Rack: "rack-1"}
		if !decodeFetchPlain(src, &reused) {
			return
		}
		if !sameFetch(&reused, kmsgFetch(t, v, src)) {
			t.Fatalf("v%d: plain decode differs from kmsg's", v)
		}
	})
}
