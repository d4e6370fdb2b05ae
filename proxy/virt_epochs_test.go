package proxy

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func batchBytes(t *testing.T, epoch int32, magic int8, nrec int) []byte {
	t.Helper()
	b := kmsg.RecordBatch{FirstOffset: 10, PartitionLeaderEpoch: epoch, Magic: magic, LastOffsetDelta: int32(nrec - 1), NumRecords: int32(nrec), ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, Records: make([]byte, nrec*8)}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// Every v2 batch of a fetched record set loses its leader epoch, the CRC
// stays valid (the field is outside it), and a truncated tail or a legacy
// message set is left byte for byte.
func TestClearBatchEpochs(t *testing.T) {
	a, b := batchBytes(t, 57, 2, 3), batchBytes(t, 3, 2, 1)
	legacy := batchBytes(t, 99, 1, 1)
	set := append(append(append([]byte(nil), a...), b...), legacy...)
	tail := batchBytes(t, 8, 2, 2)
	set = append(set, tail[:len(tail)-5]...) // KIP-74 truncated tail
	orig := append([]byte(nil), set...)
	clearBatchEpochs(set)

	epochAt := func(off int) int32 { return int32(binary.BigEndian.Uint32(set[off+12:])) }
	if epochAt(0) != -1 || epochAt(len(a)) != -1 {
		t.Fatalf("v2 batch epochs not cleared: %d, %d", epochAt(0), epochAt(len(a)))
	}
	legacyAt := len(a) + len(b)
	if string(set[legacyAt:]) != string(orig[legacyAt:]) {
		t.Fatalf("legacy message set or truncated tail was modified")
	}
	for _, off := range []int{0, len(a)} {
		crc := binary.BigEndian.Uint32(set[off+17:])
		n := int(binary.BigEndian.Uint32(set[off+8:])) + 12
		if crc != crc32.Checksum(set[off+21:off+n], crc32.MakeTable(crc32.Castagnoli)) {
			t.Fatalf("CRC no longer matches at batch %d", off)
		}
	}
}
