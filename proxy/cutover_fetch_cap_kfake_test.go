package proxy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// A record that lands on the old home after the cutover's drain froze its
// ends (a killed kproxy's late write) lies past the flip point: reads of the
// old home must stop at the frozen ends until the hold ends. A consumer that
// read it had a position past the flip point, which after the flip is past
// the new home's end: OFFSET_OUT_OF_RANGE, and a consumer resetting to the
// earliest offset read the whole topic again (the fault test's kproxy kill
// while holding, in a clean-clone make test).
func TestReadsOfTheOldHomeStopAtTheFrozenEnds(t *testing.T) {
	srv, src, _ := twoClusterProxy(t, txnRoutes(t, Source), "t")
	cl, ctx := proxyClient(t, srv, 30*time.Second, kgo.MaxVersions(kversion.V3_0_0()), kgo.DefaultProduceTopic("t"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 2; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("acked")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	srv.HoldProduce("t")
	if err := srv.WaitProduceIdle(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	srv.CapFetch("t", Source, map[int32]int64{0: 2, 1: 0, 2: 0})
	// The late write lands on the source after the freeze.
	direct := kfakeClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())
	if err := direct.ProduceSync(ctx, &kgo.Record{Topic: "t", Partition: 0, Value: []byte("stray")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	read := func() (hwm int64, offsets []int64) {
		t.Helper()
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 10, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "t"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = 0, 0, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		fp := resp.Topics[0].Partitions[0]
		recs, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: "t", Partition: 0}, &fp, kgo.DefaultDecompressor(), nil)
		for _, r := range recs.Records {
			offsets = append(offsets, r.Offset)
		}
		return fp.HighWatermark, offsets
	}
	latest := func() int64 {
		t.Helper()
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = "t"
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = 0, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0].Offset
	}

	if hwm, offs := read(); hwm != 2 || len(offs) != 2 {
		t.Errorf("a fetch of the old home while its ends are frozen: high watermark %d, offsets %v; want 2, [0 1] (the late write past the flip point must not be read)", hwm, offs)
	}
	if end := latest(); end != 2 {
		t.Errorf("the old home's latest offset while its ends are frozen: %d, want 2", end)
	}
	// Aborted: the topic stays on the source, whose log is the virtual one
	// again, late write included.
	srv.ReleaseProduce("t")
	if hwm, offs := read(); hwm != 3 || len(offs) != 3 {
		t.Errorf("a fetch after the hold ended: high watermark %d, offsets %v; want 3, [0 1 2]", hwm, offs)
	}
}

// copiedMap is an old home's offset map once the copy into it has started
// after a flip (replicator.ContinueMap): the cluster offsets below end keep
// the virtual offsets they had (cluster + shift), and the copy has written
// and recorded one record at cluster offset end, at virtual offset next (the
// virtual offsets in between are the new home's transaction markers and
// aborted records, which the copy skips). Nothing past it is mapped yet.
type copiedMap struct{ shift, end, next int64 }

func (m copiedMap) ToTarget(v int64) (int64, bool) {
	switch {
	case v < m.shift || v > m.next:
		return 0, false
	case v < m.end+m.shift:
		return v - m.shift, true
	}
	return m.end, true // a gap maps to the next record
}

func (m copiedMap) ToSource(t int64) (int64, bool) {
	switch {
	case t < m.end:
		return t + m.shift, true
	case t == m.end:
		return m.next, true
	}
	return 0, false
}

func (m copiedMap) SourceStart() int64 { return m.shift }
func (m copiedMap) SourceEnd() int64   { return m.next + 1 }
func (m copiedMap) TargetStart() int64 { return 0 }
func (m copiedMap) TargetEnd() int64   { return m.end + 1 }

// oldHomeCase is a topic r on its home, about to flip away, and the old
// home's map once the copy back has recorded its first record there.
type oldHomeCase struct {
	name string
	home string    // the topic's home before the flip
	map0 OffsetMap // its map there (nil: the identity)
	// map1 is the old home's map once the copy back recorded its first
	// record, at cluster offset 2
	map1 copiedMap
}

var oldHomeCases = []oldHomeCase{
	// Untranslated: a fetch answer would be relayed as it streams
	// (fetch_stream.go).
	{"first flip", Source, nil, copiedMap{shift: 0, end: 2, next: 5}},
	{"rollback", Target, shiftedMap{}, copiedMap{shift: 100, end: 2, next: 110}},
}

// oldHomeRig starts a proxy with topic r on c.home holding two records,
// and returns the home and a client of the proxy, and flip: a cutover's
// steps on the proxy (hold, freeze the ends, the old home's map becomes
// the copy back's, release), then the copy back's first write into the
// old home, at cluster offset 2.
func oldHomeRig(t *testing.T, c oldHomeCase) (home *kfake.Cluster, b *kgo.Broker, flip func()) {
	t.Helper()
	maps := &fakeMaps{maps: map[string]OffsetMap{}}
	if c.map0 != nil {
		maps.maps[c.home+"/r"] = c.map0
	}
	srv, src, tgt, b := virtRigServer(t, "state_dir: /nonexistent/unused\nreplicate: [r]\nroutes:\n  default: source\n  topics:\n    r: "+c.home+"\n", maps, "r")
	home = src
	if c.home == Target {
		home = tgt
	}
	produceDirect(t, home, "r", 2)
	flip = func() {
		t.Helper()
		srv.HoldProduce("r")
		srv.CapFetch("r", c.home, map[int32]int64{0: 2, 1: 0, 2: 0})
		maps.mu.Lock()
		maps.maps[c.home+"/r"] = c.map1
		maps.mu.Unlock()
		srv.ReleaseProduce("r")
		direct := kfakeClient(t, home, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := direct.ProduceSync(ctx, &kgo.Record{Topic: "r", Partition: 0, Value: []byte("copied")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	return home, b, flip
}

// A consumer's long poll on a topic's home, planned before a cutover's drain
// froze the home's ends, can be answered after the flip, by the first
// records the copy back writes into the old home. Those are the new home's
// records, at the virtual offsets the copy's map gives them. The answer used
// to go through the map of the plan (the home's, open-ended: the identity on
// a first home, the flipped map on the old home of a rollback), which put
// them right at the flip point, where the new home's other records lie: the
// consumer read them there, then again from the new home at their own
// offsets. A clean-clone CI run of TestSecuredCutoverAndRollbackUnderLoad
// read librdkafka's rdkafka-3-120 and -125 at virtual 3164-3165 (the target
// copy's 3129-3130 through the target's flipped map, shift 35) and again at
// 3174-3175 (the source's 3153-3154, shift 21), in all three groups.
func TestALongPollOnTheOldHomeAnsweredAfterTheFlipGoesThroughTheCopysMap(t *testing.T) {
	for _, c := range oldHomeCases {
		t.Run(c.name, func(t *testing.T) {
			defer func(m int) { fetchStreamMin = m }(fetchStreamMin)
			fetchStreamMin = 1
			home, b, flip := oldHomeRig(t, c)
			flipPoint := c.map1.shift + 2

			// The consumer waits at the home's end.
			polling := make(chan struct{}, 1)
			home.ControlKey(kmsg.Fetch.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				for _, rt := range kreq.(*kmsg.FetchRequest).Topics {
					for _, rp := range rt.Partitions {
						if rt.Topic == "r" && rp.Partition == 0 && rp.FetchOffset == 2 {
							select {
							case polling <- struct{}{}:
							default:
							}
						}
					}
				}
				return nil, nil, false
			})
			type answer struct {
				resp *kmsg.FetchResponse
				err  error
			}
			answered := make(chan answer, 1)
			go func() {
				req := kmsg.NewPtrFetchRequest()
				req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 20000, 1, 1<<20
				rt := kmsg.NewFetchRequestTopic()
				rt.Topic = "r"
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = 0, flipPoint, 1<<20
				rt.Partitions = append(rt.Partitions, rp)
				req.Topics = append(req.Topics, rt)
				ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
				defer cancel()
				resp, err := req.RequestWith(ctx, b)
				answered <- answer{resp, err}
			}()
			select {
			case <-polling:
			case <-time.After(15 * time.Second):
				t.Fatal("the fetch never reached the home")
			}
			flip()

			a := <-answered
			if a.err != nil {
				t.Fatal(a.err)
			}
			fp := a.resp.Topics[0].Partitions[0]
			recs, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: "r", Partition: 0}, &fp, kgo.DefaultDecompressor(), nil)
			var offsets []int64
			for _, r := range recs.Records {
				offsets = append(offsets, r.Offset)
			}
			if fp.ErrorCode != 0 || len(offsets) != 1 || offsets[0] != c.map1.next || fp.HighWatermark != c.map1.next+1 {
				t.Errorf("the long poll's answer: error %d, offsets %v, high watermark %d; want 0, [%d], %d (the copied record at the virtual offset the copy's map gives it, not at the flip point %d)",
					fp.ErrorCode, offsets, fp.HighWatermark, c.map1.next, c.map1.next+1, flipPoint)
			}
		})
	}
}

// The same for a ListOffsets (latest) whose upstream answer comes after the
// flip and the copy back's first write: the old home's end goes through the
// copy's map, not the home's (which would name the flip point + 1, an
// offset of the new home's records).
func TestAListOffsetsOnTheOldHomeAnsweredAfterTheFlipGoesThroughTheCopysMap(t *testing.T) {
	for _, c := range oldHomeCases {
		t.Run(c.name, func(t *testing.T) {
			home, b, flip := oldHomeRig(t, c)
			asked, proceed := make(chan struct{}, 1), make(chan struct{})
			var once sync.Once
			home.ControlKey(kmsg.ListOffsets.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
				home.KeepControl()
				once.Do(func() {
					asked <- struct{}{}
					home.SleepControl(func() { <-proceed })
				})
				return nil, nil, false
			})
			answered := make(chan *kmsg.ListOffsetsResponse, 1)
			go func() {
				req := kmsg.NewPtrListOffsetsRequest()
				rt := kmsg.NewListOffsetsRequestTopic()
				rt.Topic = "r"
				rp := kmsg.NewListOffsetsRequestTopicPartition()
				rp.Partition, rp.Timestamp = 0, -1
				rt.Partitions = append(rt.Partitions, rp)
				req.Topics = append(req.Topics, rt)
				ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
				defer cancel()
				resp, err := req.RequestWith(ctx, b)
				if err != nil {
					resp = nil
				}
				answered <- resp
			}()
			select {
			case <-asked:
			case <-time.After(15 * time.Second):
				t.Fatal("the ListOffsets never reached the home")
			}
			flip()
			close(proceed)
			resp := <-answered
			if resp == nil {
				t.Fatal("ListOffsets failed")
			}
			p := resp.Topics[0].Partitions[0]
			if p.ErrorCode != 0 || p.Offset != c.map1.next+1 {
				t.Errorf("the old home's latest offset: error %d, offset %d; want 0, %d (after the copied record at %d)", p.ErrorCode, p.Offset, c.map1.next+1, c.map1.next)
			}
		})
	}
}
