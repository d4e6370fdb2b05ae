package replicator

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The request send writes (kmsg's encoding around the records, then the
// records where they lie, a spliced batch's body after its head) is byte
// for byte kmsg's own encoding of the request with the records in it, for
// every Produce version with record batches and record sets of any length.
func TestProduceAroundMatchesKmsg(t *testing.T) {
	fmtr := kmsg.NewRequestFormatter(kmsg.FormatterClientID("kproxy-replicator"))
	txn := "t"
	for v := int16(3); v <= kmsg.NewPtrProduceRequest().MaxVersion(); v++ {
		for _, n := range []int{0, 1, 61, 126, 127, 128, 16383, 16384, 1 << 20} {
			records := bytes.Repeat([]byte{0xab}, n)
			req := kmsg.NewPtrProduceRequest()
			req.Version, req.Acks, req.TimeoutMillis = v, -1, 30000
			if n == 61 {
				req.TransactionID = &txn
			}
			rt := kmsg.NewProduceRequestTopic()
			rt.Topic, rt.TopicID = "topic", [16]byte{1, 2, 3}
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition = 4
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)

			// Whole, and as a spliced batch: the head in records, the
			// rest written after it (from pipes).
			for _, head := range []int{n, min(n, 61)} {
				var iov [3][]byte
				appendProduceAround(nil, fmtr, req, 7, &iov, records[:head], n-head)
				got := bytes.Join([][]byte{iov[0], iov[1], records[head:], iov[2]}, nil)
				req.Topics[0].Partitions[0].Records = records
				want := fmtr.AppendRequest(nil, req, 7)
				req.Topics[0].Partitions[0].Records = nil
				if !bytes.Equal(got, want) {
					t.Fatalf("version %d, %d bytes of records (%d in the head): %s", v, n, head, diffAt(got, want))
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
