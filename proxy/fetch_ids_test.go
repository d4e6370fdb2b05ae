package proxy

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Topic ids patched in the upstream bytes decode as the new ids, and every
// record set and field is unchanged, whatever the record sizes before them
// (empty, small, and ones whose length needs a multi-byte varint).
func TestPatchFetchTopicIDsInPlace(t *testing.T) {
	for _, version := range []int16{13, 16, 17, 18} {
		src := kmsg.NewPtrFetchResponse()
		src.Version = version
		sizes := [][]int{{0, 5}, {300, 0, 20000}, {1}}
		for ti, ps := range sizes {
			rt := kmsg.NewFetchResponseTopic()
			rt.TopicID = [16]byte{byte(ti + 1), 0xaa, 0xbb}
			for pi, n := range ps {
				p := kmsg.NewFetchResponseTopicPartition()
				p.Partition, p.HighWatermark = int32(pi), int64(100*ti+pi)
				if n > 0 {
					p.RecordBatches = bytes.Repeat([]byte{byte(n)}, n)
				}
				rt.Partitions = append(rt.Partitions, p)
			}
			src.Topics = append(src.Topics, rt)
		}
		body := src.AppendTo(nil)
		fr := kmsg.NewPtrFetchResponse()
		fr.Version = version
		if err := fr.ReadFrom(body); err != nil {
			t.Fatal(err)
		}
		ids := [][16]byte{{0x11}, {0x22}, {0x33}}
		if !patchFetchTopicIDs(body, fr, ids) {
			t.Fatalf("v%d: patch refused", version)
		}
		got := kmsg.NewPtrFetchResponse()
		got.Version = version
		if err := got.ReadFrom(body); err != nil {
			t.Fatalf("v%d: patched bytes do not decode: %v", version, err)
		}
		for i, tp := range got.Topics {
			if tp.TopicID != ids[i] {
				t.Errorf("v%d topic %d: id %x, want %x", version, i, tp.TopicID, ids[i])
			}
			for j, p := range tp.Partitions {
				want := src.Topics[i].Partitions[j]
				if !bytes.Equal(p.RecordBatches, want.RecordBatches) || p.HighWatermark != want.HighWatermark {
					t.Errorf("v%d topic %d partition %d changed", version, i, j)
				}
			}
		}
	}
	// Non-flexible versions carry no ids: nothing to patch.
	old := kmsg.NewPtrFetchResponse()
	old.Version = 11
	if patchFetchTopicIDs(old.AppendTo(nil), old, nil) {
		t.Errorf("v11 patch should be refused")
	}
}
