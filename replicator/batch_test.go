package replicator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/internal/batchcrc"
)

type testRec struct {
	delta int32 // offset delta
	tsd   int64 // timestamp delta
	key   string
	val   string
	hdrs  []kmsg.Header
}

// makeBatch encodes a v2 batch as a broker would store it, compressing the
// records with the real codec and filling Length and CRC.
func makeBatch(t testing.TB, first int64, codec int16, attrs int16, pid int64, recs []testRec) []byte {
	t.Helper()
	var raw []byte
	last := int32(0)
	for _, r := range recs {
		rec := kmsg.Record{TimestampDelta64: r.tsd, OffsetDelta: r.delta, Key: []byte(r.key), Value: []byte(r.val), Headers: r.hdrs}
		body := rec.AppendTo(nil) // Length 0 at the front: one varint byte
		body = body[1:]
		raw = binary.AppendVarint(raw, int64(len(body)))
		raw = append(raw, body...)
		last = max(last, r.delta)
	}
	if codec != 0 {
		c, err := compressorFor(codec)
		if err != nil {
			t.Fatal(err)
		}
		z, used := c.Compress(new(bytes.Buffer), raw)
		if int16(used) != codec {
			t.Fatalf("compressing with %d used %d", codec, used)
		}
		raw = append([]byte(nil), z...)
	}
	b := kmsg.RecordBatch{
		FirstOffset: first, PartitionLeaderEpoch: 7, Magic: 2,
		Attributes: attrs | codec, LastOffsetDelta: last,
		FirstTimestamp: 1_700_000_000_000, MaxTimestamp: 1_700_000_000_000 + int64(len(recs)),
		ProducerID: pid, ProducerEpoch: 3, FirstSequence: 11,
		NumRecords: int32(len(recs)), Records: raw,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[offLength:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[offCRC:], crc32.Checksum(out[offAttributes:], castagnoli))
	return out
}

func plainRecs(n int) []testRec {
	out := make([]testRec, n)
	for i := range out {
		out[i] = testRec{delta: int32(i), tsd: int64(i), key: fmt.Sprintf("k%d", i), val: fmt.Sprintf("value-%d-%s", i, bytes.Repeat([]byte("x"), i%50)),
			hdrs: []kmsg.Header{{Key: "h", Value: []byte{byte(i)}}}}
	}
	return out
}

// decode reads a batch produced by the replicator back as a consumer would
// (kgo, CRC checked), with the batch placed at base offset base.
func decode(t *testing.T, b []byte, base int64) []*kgo.Record {
	t.Helper()
	c := append([]byte(nil), b...)
	binary.BigEndian.PutUint64(c, uint64(base))
	fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: "t"},
		&kmsg.FetchResponseTopicPartition{RecordBatches: c, HighWatermark: base + 1<<20}, kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		t.Fatalf("decoding: %v", fp.Err)
	}
	return fp.Records
}

func checkHeader(t *testing.T, b []byte, s producerSession, wantN int32) {
	t.Helper()
	h, err := parseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	if h.firstOffset != 0 || int32(be.Uint32(b[offLeaderEpoch:])) != -1 || h.producerID != s.pid ||
		int16(be.Uint16(b[offProducerEpoch:])) != s.epoch || int32(be.Uint32(b[offFirstSequence:])) != s.seq {
		t.Errorf("header not rewritten: %+v", h)
	}
	if h.attributes&(attrTransactional|attrControl|attrLogAppendTime) != 0 {
		t.Errorf("attributes %#x", h.attributes)
	}
	if h.numRecords != wantN || h.lastOffsetDelta != wantN-1 {
		t.Errorf("records %d last delta %d, want %d", h.numRecords, h.lastOffsetDelta, wantN)
	}
	if int(h.length)+12 != len(b) {
		t.Errorf("length %d for %d bytes", h.length, len(b))
	}
	if got, want := be.Uint32(b[offCRC:]), crc32.Checksum(b[offAttributes:], castagnoli); got != want {
		t.Errorf("CRC %08x, want %08x", got, want)
	}
}

func TestPrepareBatchHeaderOnly(t *testing.T) {
	s := producerSession{pid: 4242, epoch: 0, seq: 77}
	// 40 records make batches below batchcrc.MinBytes (CRC computed
	// again), 400 uncompressed ones above it (CRC derived, internal/batchcrc).
	for _, n := range []int{40, 400} {
		for _, codec := range []int16{0, 1, 2, 3, 4} {
			for _, attrs := range []int16{0, attrTransactional} {
				t.Run(fmt.Sprintf("%d records codec %d attrs %#x keeps the record bytes", n, codec, attrs), func(t *testing.T) {
					recs := plainRecs(n)
					src := makeBatch(t, 1000, codec, attrs, 99, recs)
					orig := append([]byte(nil), src...)
					p, err := prepareBatch(src, 1000, s)
					if err != nil {
						t.Fatal(err)
					}
					if p.rebuilt || p.srcOffsets != nil || p.srcFirst != 1000 || p.srcLast != 1000+int64(n)-1 || p.numRecords != int32(n) {
						t.Fatalf("prepared %+v", p)
					}
					if !bytes.Equal(p.raw[batchHeaderLen:], orig[batchHeaderLen:]) {
						t.Fatal("record bytes changed")
					}
					if !bytes.Equal(p.raw[offFirstTimestamp:offProducerID], orig[offFirstTimestamp:offProducerID]) {
						t.Fatal("timestamps changed")
					}
					if codec == 0 && n == 400 && len(p.raw) < batchcrc.MinBytes {
						t.Fatalf("a %d-byte batch does not exercise the derived CRC", len(p.raw))
					}
					checkHeader(t, p.raw, s, int32(n))
					got := decode(t, p.raw, 5)
					for i, r := range got {
						if string(r.Key) != recs[i].key || string(r.Value) != recs[i].val || r.Offset != int64(5+i) ||
							r.Timestamp.UnixMilli() != 1_700_000_000_000+int64(i) || len(r.Headers) != 1 || r.Headers[0].Value[0] != byte(i) {
							t.Fatalf("record %d: %+v", i, r)
						}
					}
				})
			}
		}
	}
}

func TestPrepareBatchRebuild(t *testing.T) {
	s := producerSession{pid: 1, epoch: 2, seq: 3}
	for _, codec := range []int16{0, 3, 4} {
		t.Run(fmt.Sprintf("codec %d compacted batch is renumbered", codec), func(t *testing.T) {
			recs := plainRecs(10)
			var kept []testRec
			for i, r := range recs {
				if i%3 != 1 { // compaction removed deltas 1, 4, 7
					kept = append(kept, r)
				}
			}
			src := makeBatch(t, 500, codec, 0, -1, kept)
			p, err := prepareBatch(src, 500, s)
			if err != nil {
				t.Fatal(err)
			}
			want := []int64{500, 502, 503, 505, 506, 508, 509}
			if !p.rebuilt || fmt.Sprint(p.srcOffsets) != fmt.Sprint(want) || p.srcLast != 509 {
				t.Fatalf("prepared %+v", p)
			}
			if got := p.raw[offAttributes+1] & attrCodecMask; int16(got) != codec {
				t.Errorf("codec %d, want %d", got, codec)
			}
			checkHeader(t, p.raw, s, 7)
			for i, r := range decode(t, p.raw, 0) {
				if r.Offset != int64(i) || string(r.Key) != kept[i].key || string(r.Value) != kept[i].val ||
					r.Timestamp.UnixMilli() != 1_700_000_000_000+kept[i].tsd || r.Headers[0].Value[0] != byte(kept[i].delta) {
					t.Fatalf("record %d: %+v", i, r)
				}
			}
		})
	}
	t.Run("records below the resume offset are dropped", func(t *testing.T) {
		src := makeBatch(t, 100, 3, 0, -1, plainRecs(10))
		p, err := prepareBatch(src, 106, s)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(p.srcOffsets) != "[106 107 108 109]" {
			t.Fatalf("offsets %v", p.srcOffsets)
		}
		checkHeader(t, p.raw, s, 4)
		if got := decode(t, p.raw, 0); string(got[0].Key) != "k6" {
			t.Errorf("first record %s", got[0].Key)
		}
	})
	t.Run("LogAppendTime moves into the record timestamps", func(t *testing.T) {
		src := makeBatch(t, 0, 4, attrLogAppendTime, -1, plainRecs(5))
		binary.BigEndian.PutUint64(src[offMaxTimestamp:], 1_800_000_000_000)
		binary.BigEndian.PutUint32(src[offCRC:], crc32.Checksum(src[offAttributes:], castagnoli))
		p, err := prepareBatch(src, 0, s)
		if err != nil {
			t.Fatal(err)
		}
		checkHeader(t, p.raw, s, 5)
		for _, r := range decode(t, p.raw, 0) {
			if r.Timestamp.UnixMilli() != 1_800_000_000_000 {
				t.Errorf("timestamp %d", r.Timestamp.UnixMilli())
			}
		}
	})
	t.Run("a corrupt batch is refused", func(t *testing.T) {
		src := makeBatch(t, 0, 0, 0, -1, plainRecs(3))
		src[len(src)-1] ^= 1
		if _, err := prepareBatch(src, 0, s); err == nil {
			t.Error("corrupt batch accepted")
		}
	})
	// A large batch is not read by prepareBatch: its corruption must
	// survive the patch, so the target refuses it, and the refusal must
	// then be recognised as the source's corruption (a fatal error, not a
	// retry for ever).
	t.Run("a large corrupt batch stays corrupt and is recognised", func(t *testing.T) {
		good := makeBatch(t, 0, 0, 0, -1, plainRecs(200))
		if len(good) < batchcrc.MinBytes {
			t.Fatalf("batch of %d bytes is not large", len(good))
		}
		corrupt := append([]byte(nil), good...)
		corrupt[len(corrupt)-1] ^= 1
		refused := fmt.Errorf("produce: %w", kerr.CorruptMessage)
		p, err := prepareBatch(corrupt, 0, s)
		if err != nil {
			t.Fatal(err)
		}
		if batchCRCValid(p.raw) {
			t.Fatal("the patched corrupt batch has a valid CRC: the corruption was laundered")
		}
		if !corruptSourceBatch(refused, &p) {
			t.Error("the target's CORRUPT_MESSAGE for a corrupt source batch is not recognised")
		}
		pg, err := prepareBatch(good, 0, s)
		if err != nil {
			t.Fatal(err)
		}
		if !batchCRCValid(pg.raw) {
			t.Fatal("the patched good batch has a wrong CRC")
		}
		if corruptSourceBatch(refused, &pg) || corruptSourceBatch(errors.New("other"), &p) {
			t.Error("a good batch, or another error, taken for source corruption")
		}
	})
}

func controlBatch(t *testing.T, off int64, pid int64, commit bool) []byte {
	typ := byte(0)
	if commit {
		typ = 1
	}
	b := makeBatch(t, off, 0, attrTransactional|attrControl, pid, []testRec{{key: string([]byte{0, 0, 0, typ}), val: "\x00\x00\x00\x00\x00\x00"}})
	return b
}

func TestReadCommittedFilter(t *testing.T) {
	// pid 1 commits (0-1, marker 2); pid 2 aborts (3-4 interleaved with pid
	// 1's 5, marker 6); pid 2 again, committed (7, marker 8); non-txn 9.
	var set []byte
	add := func(b []byte) { set = append(set, b...) }
	add(makeBatch(t, 0, 0, attrTransactional, 1, plainRecs(2)))
	add(controlBatch(t, 2, 1, true))
	add(makeBatch(t, 3, 3, attrTransactional, 2, plainRecs(2)))
	add(makeBatch(t, 5, 0, attrTransactional, 1, plainRecs(1)))
	add(controlBatch(t, 6, 2, false))
	add(makeBatch(t, 7, 0, attrTransactional, 2, plainRecs(1)))
	add(controlBatch(t, 8, 2, true))
	add(makeBatch(t, 9, 0, 0, -1, plainRecs(1)))
	truncated := makeBatch(t, 10, 0, 0, -1, plainRecs(3))
	add(truncated[:len(truncated)-5])

	batches := splitRecordSet(nil, set)
	if len(batches) != 8 {
		t.Fatalf("%d batches, want 8 (the truncated tail is dropped)", len(batches))
	}
	f := newAbortFilter([]kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 2, FirstOffset: 3}})
	var kept []int64
	for _, b := range batches {
		h, err := parseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if f.keep(h, b) {
			kept = append(kept, h.firstOffset)
		}
	}
	if fmt.Sprint(kept) != "[0 5 7 9]" {
		t.Errorf("kept batches at %v, want [0 5 7 9]", kept)
	}
}

func TestSplitRecordSetEdges(t *testing.T) {
	for _, in := range [][]byte{nil, {1, 2, 3}, make([]byte, 17), bytes.Repeat([]byte{0xff}, 70)} {
		if got := splitRecordSet(nil, in); len(got) != 0 {
			t.Errorf("split(%x) = %d batches", in, len(got))
		}
	}
	legacy := makeBatch(t, 0, 0, 0, -1, plainRecs(1))
	legacy[offMagic] = 1
	if _, err := parseHeader(legacy); err == nil {
		t.Error("magic 1 accepted")
	}
}
