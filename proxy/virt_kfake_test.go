package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// fakeMaps is the replicator's OffsetMaps as a test sets it: a map per
// cluster/topic, or "pending" (translated, not ready).
type fakeMaps struct {
	mu      sync.Mutex
	maps    map[string]OffsetMap
	pending map[string]bool
}

func (f *fakeMaps) Map(cluster, topic string, _ int32) (OffsetMap, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending[cluster+"/"+topic] {
		return nil, true
	}
	if m, ok := f.maps[cluster+"/"+topic]; ok {
		return m, true
	}
	return nil, false
}

// virtRig starts a kfake source (3 brokers) and target (1 broker), each
// seeded with topics, and a proxy over both with routes (after
// routesHeader) and maps, and returns a client that talks to the proxy
// directly (no sharding by kgo) at Kafka 3.0 versions (topic names in Fetch
// and Produce). Both clusters advertise OffsetForLeaderEpoch from v2 (kfake
// starts at v3, above the v2 kproxy serves); tests that use it answer it
// themselves (fakeOffsetForLeaderEpoch).
func virtRig(t *testing.T, routes string, maps OffsetMaps, topics ...string) (*kfake.Cluster, *kfake.Cluster, *kgo.Broker) {
	t.Helper()
	_, src, tgt, b := virtRigServer(t, routes, maps, topics...)
	return src, tgt, b
}

// virtRigServer is virtRig that also returns the proxy, for tests that
// drive a cutover's steps on it.
func virtRigServer(t *testing.T, routes string, maps OffsetMaps, topics ...string) (*Server, *kfake.Cluster, *kfake.Cluster, *kgo.Broker) {
	t.Helper()
	cluster := func(brokers int, id string) *kfake.Cluster {
		c := newKfake(t, kfake.NumBrokers(brokers), kfake.ClusterID(id), kfake.SeedTopics(3, topics...))
		cl := kfakeClient(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		versions, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		for i := range versions.ApiKeys {
			if versions.ApiKeys[i].ApiKey == kmsg.OffsetForLeaderEpoch.Int16() {
				versions.ApiKeys[i].MinVersion = 2
			}
		}
		c.ControlKey(kmsg.ApiVersions.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			resp := *versions
			resp.Version = kreq.GetVersion()
			return &resp, nil, true
		})
		return c
	}
	src, tgt := cluster(3, "src"), cluster(1, "tgt")
	srv := startProxy(t, Options{NodeID: 9, StateDir: t.TempDir(),
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()}, Router: tableFor(t, routesHeader+routes)})
	srv.SetOffsetMaps(maps)
	cl, _ := proxyClient(t, srv, 20*time.Second, kgo.MaxVersions(kversion.V3_0_0()))
	return srv, src, tgt, cl.SeedBrokers()[0]
}

// fakeOffsetForLeaderEpoch makes c answer every OffsetForLeaderEpoch with
// epoch 5 and end offset 4 for each partition asked.
func fakeOffsetForLeaderEpoch(c *kfake.Cluster) {
	c.ControlKey(kmsg.OffsetForLeaderEpoch.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.OffsetForLeaderEpochRequest)
		resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetForLeaderEpochResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				sp.Partition, sp.LeaderEpoch, sp.EndOffset = p.Partition, 5, 4
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

func request[R kmsg.Response](t *testing.T, b *kgo.Broker, req kmsg.Request) R {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := b.Request(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp.(R)
}

// produceDirect writes n one-record batches to partition 0 of topic on c
// (offsets 0..n-1 on an empty partition).
func produceDirect(t *testing.T, c *kfake.Cluster, topic string, n int) {
	t.Helper()
	cl := kfakeClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// replicatedOnTarget: topic r is replicated and served by the target, whose
// offsets go through fakeMap (target 0..7 = virtual 100..109).
const replicatedOnTarget = "state_dir: /nonexistent/unused\nreplicate: [r]\nroutes:\n  default: source\n  topics:\n    r: target\n"

// OffsetForLeaderEpoch answers no epoch and a virtual end offset (decision
// 003); it answered the target's epoch and end offset.
func TestOffsetForLeaderEpochAnswersVirtualEndOffsetAndNoEpoch(t *testing.T) {
	_, tgt, b := virtRig(t, replicatedOnTarget, &fakeMaps{maps: map[string]OffsetMap{"target/r": fakeMap{}}}, "r")
	fakeOffsetForLeaderEpoch(tgt)
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.ReplicaID = -1
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = "r"
	rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	rp.Partition, rp.LeaderEpoch, rp.CurrentLeaderEpoch = 0, 5, 57
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := request[*kmsg.OffsetForLeaderEpochResponse](t, b, req)
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || p.LeaderEpoch != -1 || p.EndOffset != 106 {
		t.Fatalf("answer: error %d, epoch %d, end offset %d; want 0, -1, 106 (virtual of 4)", p.ErrorCode, p.LeaderEpoch, p.EndOffset)
	}
}

// ListOffsets refuses a partition whose map is pending with a retriable
// error, as Fetch does; it answered the target's own offsets.
func TestListOffsetsRefusesWhileTheMapIsPending(t *testing.T) {
	maps := &fakeMaps{pending: map[string]bool{"target/r": true}}
	_, tgt, b := virtRig(t, replicatedOnTarget, maps, "r")
	produceDirect(t, tgt, "r", 8)
	listLatest := func() kmsg.ListOffsetsResponseTopicPartition {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = "r"
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = 0, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return request[*kmsg.ListOffsetsResponse](t, b, req).Topics[0].Partitions[0]
	}
	if p := listLatest(); p.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("map pending: error %d offset %d; want NOT_LEADER_FOR_PARTITION", p.ErrorCode, p.Offset)
	}
	maps.mu.Lock()
	maps.pending, maps.maps = nil, map[string]OffsetMap{"target/r": fakeMap{}}
	maps.mu.Unlock()
	if p := listLatest(); p.ErrorCode != 0 || p.Offset != 110 || p.LeaderEpoch != -1 {
		t.Fatalf("map ready: error %d offset %d epoch %d; want 0, 110, -1", p.ErrorCode, p.Offset, p.LeaderEpoch)
	}
}

func deleteRecords(t *testing.T, b *kgo.Broker, topic string, offset int64) kmsg.DeleteRecordsResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.TimeoutMillis = 5000
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return request[*kmsg.DeleteRecordsResponse](t, b, req).Topics[0].Partitions[0]
}

// DeleteRecords on a replicated topic is refused (a delete would not reach
// the copy, and one past the copy's end on the source would stop the copy);
// it was forwarded.
func TestDeleteRecordsRefusedOnAReplicatedTopic(t *testing.T) {
	_, tgt, b := virtRig(t, replicatedOnTarget, &fakeMaps{maps: map[string]OffsetMap{"target/r": fakeMap{}}}, "r")
	produceDirect(t, tgt, "r", 8)
	if p := deleteRecords(t, b, "r", 106); p.ErrorCode != kerr.PolicyViolation.Code {
		t.Fatalf("error %d, low watermark %d; want POLICY_VIOLATION", p.ErrorCode, p.LowWatermark)
	}
	if start := startOffset(t, tgt, "r"); start != 0 {
		t.Fatalf("target log start %d after a refused delete, want 0", start)
	}
}

// startOffset is partition 0's log start on c, asked directly.
func startOffset(t *testing.T, c *kfake.Cluster, topic string) int64 {
	t.Helper()
	cl := kfakeClient(t, c)
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = 0, -2
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].Offset
}

// After a cutover, a topic's home serves virtual offsets through its sealed
// map: DeleteRecords translates the requested offset to the home's and the
// low watermark back; it forwarded virtual offsets unchanged (106 is past
// the target's end: OFFSET_OUT_OF_RANGE).
func TestDeleteRecordsTranslatesOffsetsBothWays(t *testing.T) {
	routes := "routes:\n  default: source\n  topics:\n    f: target\n"
	_, tgt, b := virtRig(t, routes, &fakeMaps{maps: map[string]OffsetMap{"target/f": fakeMap{}}}, "f")
	produceDirect(t, tgt, "f", 8)
	if p := deleteRecords(t, b, "f", 106); p.ErrorCode != 0 || p.LowWatermark != 106 {
		t.Fatalf("error %d, low watermark %d; want 0, 106 (virtual)", p.ErrorCode, p.LowWatermark)
	}
	if start := startOffset(t, tgt, "f"); start != 4 {
		t.Fatalf("target log start %d, want 4 (virtual 106)", start)
	}
}

// DescribeProducers answers a virtual start offset of an open transaction;
// it answered the cluster's.
func TestDescribeProducersTranslatesTxnStartOffset(t *testing.T) {
	routes := "routes:\n  default: source\n  topics:\n    f: target\n"
	_, tgt, b := virtRig(t, routes, &fakeMaps{maps: map[string]OffsetMap{"target/f": fakeMap{}}}, "f")
	tgt.ControlKey(kmsg.DescribeProducers.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.DescribeProducersRequest)
		resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewDescribeProducersResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewDescribeProducersResponseTopicPartition()
				sp.Partition = p
				a := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
				a.ProducerID, a.LastSequence, a.CurrentTxnStartOffset = 5, 7, 4
				sp.ActiveProducers = append(sp.ActiveProducers, a)
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	req := kmsg.NewPtrDescribeProducersRequest()
	req.Topics = []kmsg.DescribeProducersRequestTopic{{Topic: "f", Partitions: []int32{0}}}
	resp := request[*kmsg.DescribeProducersResponse](t, b, req)
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || len(p.ActiveProducers) != 1 {
		t.Fatalf("answer %+v", p)
	}
	if a := p.ActiveProducers[0]; a.CurrentTxnStartOffset != 106 || a.LastSequence != 7 {
		t.Fatalf("txn start %d, last sequence %d; want 106 (virtual), 7", a.CurrentTxnStartOffset, a.LastSequence)
	}
}

// oneRecordBatch is a valid v2 batch holding one record.
func oneRecordBatch() []byte {
	rec := []byte{0}                   // attributes
	rec = binary.AppendVarint(rec, 0)  // timestamp delta
	rec = binary.AppendVarint(rec, 0)  // offset delta
	rec = binary.AppendVarint(rec, -1) // key: null
	rec = binary.AppendVarint(rec, 1)  // value length
	rec = append(rec, 'v')             // value
	rec = binary.AppendVarint(rec, 0)  // headers
	recs := binary.AppendVarint(nil, int64(len(rec)))
	recs = append(recs, rec...)
	b := kmsg.RecordBatch{Magic: 2, NumRecords: 1, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, Records: recs}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// splitAPI is one split-by-leader API in the merge tests: a request for
// partitions 0-2 of topics s (source) and t (target). The upstream answer
// that leaves partition 1 out (answerAllButPartition1) and the client
// answer's codes (partitionCodes) are read the same way for every API: each
// has Topics[].Topic and Topics[].Partitions[].Partition (and ErrorCode).
type splitAPI struct {
	key     kmsg.Key
	request func() kmsg.Request
}

var splitAPIs = []splitAPI{
	{
		key: kmsg.ListOffsets,
		request: func() kmsg.Request {
			req := kmsg.NewPtrListOffsetsRequest()
			req.ReplicaID = -1
			return splitRequest(req, func(partition any, p int32) {
				rp := partition.(*kmsg.ListOffsetsRequestTopicPartition)
				rp.Partition, rp.Timestamp = p, -1
			})
		},
	},
	{
		key: kmsg.OffsetForLeaderEpoch,
		request: func() kmsg.Request {
			req := kmsg.NewPtrOffsetForLeaderEpochRequest()
			req.ReplicaID = -1
			return splitRequest(req, func(partition any, p int32) {
				rp := partition.(*kmsg.OffsetForLeaderEpochRequestTopicPartition)
				rp.Partition, rp.LeaderEpoch = p, 0
			})
		},
	},
	{
		key: kmsg.DeleteRecords,
		request: func() kmsg.Request {
			req := kmsg.NewPtrDeleteRecordsRequest()
			req.TimeoutMillis = 5000
			return splitRequest(req, func(partition any, p int32) {
				rp := partition.(*kmsg.DeleteRecordsRequestTopicPartition)
				rp.Partition, rp.Offset = p, 0
			})
		},
	},
	{
		key: kmsg.DescribeProducers,
		request: func() kmsg.Request {
			// DescribeProducers lists partitions as bare int32s.
			return splitRequest(kmsg.NewPtrDescribeProducersRequest(), func(partition any, p int32) {
				*partition.(*int32) = p
			})
		},
	},
	{
		key: kmsg.Produce,
		request: func() kmsg.Request {
			req := kmsg.NewPtrProduceRequest()
			req.Acks, req.TimeoutMillis = -1, 5000
			return splitRequest(req, func(partition any, p int32) {
				rp := partition.(*kmsg.ProduceRequestTopicPartition)
				rp.Partition, rp.Records = p, oneRecordBatch()
			})
		},
	},
	{
		key: kmsg.Fetch,
		request: func() kmsg.Request {
			req := kmsg.NewPtrFetchRequest()
			req.ReplicaID, req.MaxWaitMillis, req.MaxBytes = -1, 10, 1<<20
			return splitRequest(req, func(partition any, p int32) {
				rp := partition.(*kmsg.FetchRequestTopicPartition)
				rp.Partition, rp.PartitionMaxBytes = p, 1<<20
			})
		},
	},
}

// splitRequest fills req's Topics with partitions 0-2 of topics s and t.
// Each partition starts with kmsg's defaults (as its NewXxx constructor
// gives) and set, given a pointer to it, sets its number and the rest.
func splitRequest(req kmsg.Request, set func(partition any, p int32)) kmsg.Request {
	topics := reflect.ValueOf(req).Elem().FieldByName("Topics")
	for _, topic := range []string{"s", "t"} {
		rt := newDefault(topics.Type().Elem())
		rt.FieldByName("Topic").SetString(topic)
		parts := rt.FieldByName("Partitions")
		for p := int32(0); p < 3; p++ {
			rp := newDefault(parts.Type().Elem())
			set(rp.Addr().Interface(), p)
			parts.Set(reflect.Append(parts, rp))
		}
		topics.Set(reflect.Append(topics, rt))
	}
	return req
}

// answerAllButPartition1 is an upstream answer to a split API's request
// that answers every partition asked except partition 1, with code 0.
func answerAllButPartition1(req kmsg.Request) kmsg.Response {
	resp := req.ResponseKind()
	topics := reflect.ValueOf(resp).Elem().FieldByName("Topics")
	reqTopics := reflect.ValueOf(req).Elem().FieldByName("Topics")
	for i := 0; i < reqTopics.Len(); i++ {
		rt := reqTopics.Index(i)
		st := newDefault(topics.Type().Elem())
		st.FieldByName("Topic").Set(rt.FieldByName("Topic"))
		parts, reqParts := st.FieldByName("Partitions"), rt.FieldByName("Partitions")
		for j := 0; j < reqParts.Len(); j++ {
			p := reqParts.Index(j)
			if p.Kind() == reflect.Struct { // DescribeProducers: bare int32s
				p = p.FieldByName("Partition")
			}
			if p.Int() == 1 {
				continue
			}
			sp := newDefault(parts.Type().Elem())
			sp.FieldByName("Partition").SetInt(p.Int())
			parts.Set(reflect.Append(parts, sp))
		}
		topics.Set(reflect.Append(topics, st))
	}
	return resp
}

// partitionCodes is a split API answer's error codes by "topic/partition",
// one per time the partition is answered.
func partitionCodes(resp kmsg.Response) map[string][]int16 {
	out := map[string][]int16{}
	topics := reflect.ValueOf(resp).Elem().FieldByName("Topics")
	for i := 0; i < topics.Len(); i++ {
		t := topics.Index(i)
		parts := t.FieldByName("Partitions")
		for j := 0; j < parts.Len(); j++ {
			p := parts.Index(j)
			k := fmt.Sprintf("%s/%d", t.FieldByName("Topic").String(), p.FieldByName("Partition").Int())
			out[k] = append(out[k], int16(p.FieldByName("ErrorCode").Int()))
		}
	}
	return out
}

// newDefault is a new value of typ holding kmsg's defaults (Default()).
func newDefault(typ reflect.Type) reflect.Value {
	v := reflect.New(typ)
	if d, ok := v.Interface().(interface{ Default() }); ok {
		d.Default()
	}
	return v.Elem()
}

// A merged split-by-leader answer answers every requested partition, once:
// when the target fails, its partitions get NOT_LEADER_FOR_PARTITION (the
// source's are answered as usual); when the target's answer leaves a
// partition out, that partition gets NOT_LEADER_FOR_PARTITION (a Fetch
// answer's left-out partition is answered empty with no error instead).
func TestSplitByLeaderAnswersEveryPartition(t *testing.T) {
	routes := "routes:\n  default: source\n  topics:\n    s: source\n    t: target\n"
	for _, api := range splitAPIs {
		for _, how := range []string{"upstream fails", "answer omits a partition"} {
			t.Run(kmsg.NameForKey(api.key.Int16())+"/"+how, func(t *testing.T) {
				src, tgt, b := virtRig(t, routes, &fakeMaps{}, "s", "t")
				if api.key == kmsg.OffsetForLeaderEpoch {
					fakeOffsetForLeaderEpoch(src)
				}
				tgt.ControlKey(api.key.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
					if how == "upstream fails" {
						tgt.KeepControl() // every attempt, retries included
						return nil, errors.New("injected: connection dropped"), true
					}
					return answerAllButPartition1(req), nil, true
				})
				codes := partitionCodes(request[kmsg.Response](t, b, api.request()))
				for _, topic := range []string{"s", "t"} {
					for p := 0; p < 3; p++ {
						k := fmt.Sprintf("%s/%d", topic, p)
						got := codes[k]
						if len(got) != 1 {
							t.Fatalf("%s answered %d times (%v), want once; answer %v", k, len(got), got, codes)
						}
						want := int16(0)
						if topic == "t" && (how == "upstream fails" || p == 1) {
							want = kerr.NotLeaderForPartition.Code
						}
						if api.key == kmsg.Fetch && how != "upstream fails" {
							// A fetch answer that leaves a partition out had
							// nothing for it: answered empty, no error.
							want = 0
						}
						if topic == "t" && got[0] != want || topic == "s" && got[0] == kerr.NotLeaderForPartition.Code {
							t.Errorf("%s: error %d, want %d", k, got[0], want)
						}
					}
				}
			})
		}
	}
}
