package replicator

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The request send writes (kmsg's encoding of the fields before the
// topics, the topics encoded around the records, the records where they
// lie, a spliced batch's body after its head) is byte for byte kmsg's own
// encoding of the request with the records in it, for every Produce
// version with record batches, record sets of any length, and several
// partitions of several topics in one request.
func TestAppendProduceMatchesKmsg(t *testing.T) {
	fmtr := kmsg.NewRequestFormatter(kmsg.FormatterClientID("kproxy-replicator"))
	txn := "t"
	call := func(topic string, id byte, part int32, records []byte, bodyLen int) *produceCall {
		req := kmsg.NewPtrProduceRequest()
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = topic, [16]byte{id, 2, 3}
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = part
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return &produceCall{req: req, records: records, bodyLen: bodyLen}
	}
	for v := int16(3); v <= kmsg.NewPtrProduceRequest().MaxVersion(); v++ {
		for _, n := range []int{0, 1, 61, 126, 127, 128, 16383, 16384, 1 << 20} {
			records := bytes.Repeat([]byte{0xab}, n)
			// Whole, and as a spliced batch: the head in records, the
			// rest written after it (from pipes); then merged with two
			// more partitions of the same topic and one of another.
			cases := [][]*produceCall{
				{call("topic", 1, 4, records, 0)},
				{call("topic", 1, 4, records[:min(n, 61)], n-min(n, 61))},
				{call("topic", 1, 4, records, 0), call("topic", 1, 0, records[:min(n, 7)], 0), call("topic", 1, 9, nil, 0), call("other", 5, 4, records[:min(n, 200)], 0)},
			}
			for ci, calls := range cases {
				hdr := kmsg.NewPtrProduceRequest()
				hdr.Version, hdr.Acks, hdr.TimeoutMillis = v, -1, 30000
				if n == 61 {
					hdr.TransactionID = &txn
				}
				_, iov, _ := appendProduce(nil, nil, nil, fmtr, hdr, 7, calls)
				var got []byte
				for i, piece := range iov {
					got = append(got, piece...)
					if i%2 == 1 && calls[i/2].bodyLen > 0 {
						got = append(got, records[len(calls[i/2].records):]...)
					}
				}
				want := kmsg.NewPtrProduceRequest()
				want.Version, want.Acks, want.TimeoutMillis, want.TransactionID = v, -1, 30000, hdr.TransactionID
				for _, c := range calls {
					rt := c.req.Topics[0]
					rp := rt.Partitions[0]
					rp.Records = records[:len(c.records)+c.bodyLen]
					if k := len(want.Topics) - 1; k >= 0 && want.Topics[k].Topic == rt.Topic {
						want.Topics[k].Partitions = append(want.Topics[k].Partitions, rp)
						continue
					}
					rt.Partitions = []kmsg.ProduceRequestTopicPartition{rp}
					want.Topics = append(want.Topics, rt)
				}
				if w := fmtr.AppendRequest(nil, want, 7); !bytes.Equal(got, w) {
					t.Fatalf("version %d, %d bytes of records, case %d: %s", v, n, ci, diffAt(got, w))
				}
			}
		}
	}
}

func diffAt(got, want []byte) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d is %#x, kmsg has %#x (lengths %d, %d)", i, got[i], want[i], len(got), len(want))
		}
	}
	return fmt.Sprintf("lengths %d, kmsg %d", len(got), len(want))
}
