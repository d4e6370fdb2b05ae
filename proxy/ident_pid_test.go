package proxy

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A batch from a virtual producer leaves with the cluster's PID and epoch,
// its sequence untouched and a CRC that matches again; an idempotent batch
// with a PID kproxy did not issue is left byte for byte.
func TestRewriteProducerIDKeepsSequenceAndFixesCRC(t *testing.T) {
	srv := &Server{}
	srv.pids.m = map[pidKey]upstreamPID{}
	vpid := newVirtualPID()
	srv.pids.m[pidKey{vpid: vpid, vepoch: 3, cluster: Target}] = upstreamPID{pid: 4001, epoch: 7}
	rc := &reqCtx{cc: &clientConn{srv: srv}}

	mk := func(pid int64, epoch int16, seq int32) []byte {
		b := kmsg.RecordBatch{Magic: 2, ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: 2, LastOffsetDelta: 1, Records: []byte("0123456789abcdef")}
		raw := b.AppendTo(nil)
		binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
		binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
		return raw
	}
	virtual := mk(vpid, 3, 500)
	if code := rc.rewriteProducerID(Target, virtual); code != 0 {
		t.Fatalf("error code %d", code)
	}
	var got kmsg.RecordBatch
	if err := got.ReadFrom(virtual); err != nil {
		t.Fatal(err)
	}
	if got.ProducerID != 4001 || got.ProducerEpoch != 7 || got.FirstSequence != 500 {
		t.Fatalf("pid %d epoch %d seq %d, want 4001 7 500", got.ProducerID, got.ProducerEpoch, got.FirstSequence)
	}
	if uint32(got.CRC) != crc32.Checksum(virtual[21:], castagnoli) {
		t.Fatalf("CRC does not match the rewritten batch")
	}

	real := mk(12, 0, 9)
	orig := append([]byte(nil), real...)
	if code := rc.rewriteProducerID(Target, real); code != 0 || string(real) != string(orig) {
		t.Fatalf("a real PID's batch was changed (code %d)", code)
	}
}

// A batch the client sent corrupt (its bytes do not match its CRC) is still
// corrupt after the producer id rewrite, for the broker to refuse
// (CORRUPT_MESSAGE): the new CRC is derived from the client's, never
// computed over the damaged bytes. Large and small batches alike, and a
// good batch of each size gets a CRC that matches again.
func TestRewriteProducerIDKeepsACorruptBatchCorrupt(t *testing.T) {
	srv := &Server{}
	srv.pids.m = map[pidKey]upstreamPID{}
	vpid := newVirtualPID()
	srv.pids.m[pidKey{vpid: vpid, vepoch: 0, cluster: Source}] = upstreamPID{pid: 77, epoch: 1}
	rc := &reqCtx{cc: &clientConn{srv: srv}}
	for _, size := range []int{100, 64 << 10} {
		mk := func() []byte {
			recs := make([]byte, size)
			for i := range recs {
				recs[i] = byte(i * 7)
			}
			b := kmsg.RecordBatch{Magic: 2, ProducerID: vpid, NumRecords: 1, Records: recs}
			raw := b.AppendTo(nil)
			binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
			binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
			return raw
		}
		good, bad := mk(), mk()
		bad[len(bad)-10] ^= 0x40 // damaged on the way, after the client's CRC
		for _, b := range [][]byte{good, bad} {
			if code := rc.rewriteProducerIDAt(Source, txnPartition{topic: "t", partition: 0}, b); code != 0 {
				t.Fatalf("size %d: error code %d", size, code)
			}
			if pid := int64(binary.BigEndian.Uint64(b[43:])); pid != 77 {
				t.Fatalf("size %d: producer id %d, want 77", size, pid)
			}
		}
		if binary.BigEndian.Uint32(good[17:]) != crc32.Checksum(good[21:], castagnoli) {
			t.Fatalf("size %d: the good batch's CRC does not match after the rewrite", size)
		}
		if binary.BigEndian.Uint32(bad[17:]) == crc32.Checksum(bad[21:], castagnoli) {
			t.Fatalf("size %d: the corrupt batch matches its CRC after the rewrite: the corruption is hidden", size)
		}
	}
}

// An epoch bump keeps the virtual PID and forgets its upstream sessions; a
// first call hands out a virtual PID; a real PID is refused.
func TestInitVirtualProducer(t *testing.T) {
	srv := &Server{}
	srv.pids.m = map[pidKey]upstreamPID{}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.Version, req.ProducerID, req.ProducerEpoch = 4, -1, -1
	first := srv.initVirtualProducer(req)
	if !isVirtualPID(first.ProducerID) || first.ProducerEpoch != 0 {
		t.Fatalf("first init: %d/%d", first.ProducerID, first.ProducerEpoch)
	}
	srv.pids.m[pidKey{vpid: first.ProducerID, cluster: Source}] = upstreamPID{1, 0}
	req.ProducerID, req.ProducerEpoch = first.ProducerID, 0
	bumped := srv.initVirtualProducer(req)
	// The old epoch's session stays: the client resends its unanswered
	// batches under the old epoch (TestResendUnderTheOldEpochAfterABumpIsAnsweredAsADuplicate).
	if bumped.ProducerID != first.ProducerID || bumped.ProducerEpoch != 1 || len(srv.pids.m) != 1 {
		t.Fatalf("bump: %d/%d, %d sessions left, want the old epoch's", bumped.ProducerID, bumped.ProducerEpoch, len(srv.pids.m))
	}
	req.ProducerID = 5
	if r := srv.initVirtualProducer(req); r.ErrorCode == 0 {
		t.Fatalf("a real PID was accepted for a bump")
	}
}

// Regression for the bit-62 test: kfake allocates random 63-bit PIDs, so an
// upstream transactional PID may have bit 62 set. A transactional batch is
// translated through the transactional table, never by its PID's bits: an
// unknown one is refused rather than mapped to an idempotent session, and a
// known one gets its cluster session and a sequence rebased to start at 0
// (then continuing, retries included).
func TestTransactionalBatchUsesTheTableNotTheBits(t *testing.T) {
	srv := &Server{}
	srv.pids.m = map[pidKey]upstreamPID{}
	rc := &reqCtx{cc: &clientConn{srv: srv}}
	mk := func(pid int64, epoch int16, seq int32) []byte {
		b := kmsg.RecordBatch{Magic: 2, Attributes: batchTransactional, ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: 2, LastOffsetDelta: 1, Records: []byte("0123456789abcdef")}
		raw := b.AppendTo(nil)
		binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
		binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
		return raw
	}
	kfakeLike := virtualPIDBit | 12345 // an upstream PID that has bit 62 set
	tp := txnPartition{"t", 1}
	if code := rc.rewriteProducerIDAt(Source, tp, mk(kfakeLike, 0, 0)); code != kerr.InvalidProducerIDMapping.Code {
		t.Fatalf("unknown transactional PID: code %d, want INVALID_PRODUCER_ID_MAPPING", code)
	}
	if len(srv.pids.m) != 0 {
		t.Fatalf("a transactional batch opened an idempotent session")
	}

	tx := srv.pids.txnGet("tx")
	tx.vpid, tx.vepoch = newVirtualPID(), 4
	tx.sessions[Source] = upstreamPID{kfakeLike, 9}
	srv.pids.txnPIDs[tx.vpid] = tx
	if code := rc.rewriteProducerIDAt(Source, tp, mk(tx.vpid, 4, 40)); code != kerr.InvalidTxnState.Code {
		t.Fatalf("no open transaction: code %d, want INVALID_TXN_STATE", code)
	}
	srv.pids.txnBegin(tx, Source)
	if code := rc.rewriteProducerIDAt(Source, tp, mk(tx.vpid, 3, 40)); code != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("old epoch: code %d, want INVALID_PRODUCER_EPOCH", code)
	}
	if code := rc.rewriteProducerID(Source, mk(tx.vpid, 4, 40)); code != kerr.InvalidTxnState.Code {
		t.Fatalf("no partition: code %d, want INVALID_TXN_STATE", code)
	}
	for _, c := range []struct{ client, upstream int32 }{{40, 0}, {42, 2}, {42, 2}, {44, 4}} {
		b := mk(tx.vpid, 4, c.client)
		if code := rc.rewriteProducerIDAt(Source, tp, b); code != 0 {
			t.Fatalf("code %d", code)
		}
		var got kmsg.RecordBatch
		if err := got.ReadFrom(b); err != nil {
			t.Fatal(err)
		}
		if got.ProducerID != kfakeLike || got.ProducerEpoch != 9 || got.FirstSequence != c.upstream || uint32(got.CRC) != crc32.Checksum(b[21:], castagnoli) {
			t.Fatalf("client seq %d: pid %d epoch %d seq %d, want %d 9 %d and a matching CRC", c.client, got.ProducerID, got.ProducerEpoch, got.FirstSequence, kfakeLike, c.upstream)
		}
	}
	// Sequences wrap at 2^31 on both sides.
	if got := tx.rebaseSequenceLocked(Source, txnPartition{"t", 2}, math.MaxInt32); got != 0 {
		t.Fatalf("base: %d", got)
	}
	if got := tx.rebaseSequenceLocked(Source, txnPartition{"t", 2}, 1); got != 2 {
		t.Fatalf("after the wrap: %d, want 2", got)
	}
}

// A topic that moved gets its own upstream session, a new one per move, so
// an idempotent producer that comes back to a cluster (a rollback) does not
// continue on the session whose sequences stopped at the first flip. Other
// topics keep the shared session.
func TestMovedTopicGetsFreshUpstreamSessions(t *testing.T) {
	srv := &Server{}
	srv.pids.m = map[pidKey]upstreamPID{}
	vpid := newVirtualPID()
	shared := pidKey{vpid: vpid, vepoch: 0, cluster: Source}
	srv.pids.m[shared] = upstreamPID{pid: 11, epoch: 0}
	srv.pids.m[pidKey{vpid: vpid, cluster: Source, topic: "orders", moves: 2}] = upstreamPID{pid: 33, epoch: 0}
	rc := &reqCtx{cc: &clientConn{srv: srv}}
	pidOf := func(topic string) int64 {
		t.Helper()
		u, code := rc.upstreamPID(Source, topic, vpid, 0)
		if code != 0 {
			t.Fatalf("upstreamPID(%s): code %d", topic, code)
		}
		return u.pid
	}
	if got := pidOf("orders"); got != 11 {
		t.Fatalf("before any move: pid %d, want the shared 11", got)
	}
	srv.pids.moveTopic("orders")
	srv.pids.moveTopic("orders")
	if got := pidOf("orders"); got != 33 {
		t.Fatalf("after two moves: pid %d, want the topic's own 33", got)
	}
	if got := pidOf("payments"); got != 11 {
		t.Fatalf("another topic: pid %d, want the shared 11", got)
	}
}

// Upstream sessions and topic moves are saved in state_dir and loaded by the
// next Server, so a batch resent after a restart reaches the same upstream
// session (and the broker drops it as a duplicate). A torn last line is
// skipped.
func TestProducerSessionsSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	var first producerIDs
	first.m = map[pidKey]upstreamPID{}
	st, err := openPIDStore(dir, &first, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	first.store = st
	vpid := newVirtualPID()
	shared := pidKey{vpid: vpid, vepoch: 1, cluster: Source}
	if err := st.appendLocked(pidRecord{VPID: vpid, VEpoch: 1, Cluster: Source, PID: 41, Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	first.moveTopic("orders")
	first.moveTopic("orders")
	if err := st.appendLocked(pidRecord{VPID: vpid, VEpoch: 1, Cluster: Target, Topic: "orders", Moves: 2, PID: 77, Epoch: 0}); err != nil {
		t.Fatal(err)
	}
	st.close()
	f, err := os.OpenFile(filepath.Join(dir, pidStoreFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"v":12,"c":"sou`) // a crash mid-write
	f.Close()

	var second producerIDs
	second.m = map[pidKey]upstreamPID{}
	st2, err := openPIDStore(dir, &second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st2.close()
	if got := second.m[shared]; got != (upstreamPID{41, 2}) {
		t.Errorf("shared session after restart: %+v", got)
	}
	if got := second.m[pidKey{vpid: vpid, vepoch: 1, cluster: Target, topic: "orders", moves: 2}]; got != (upstreamPID{77, 0}) {
		t.Errorf("moved topic's session after restart: %+v", got)
	}
	if second.moved["orders"] != 2 || len(second.m) != 2 {
		t.Errorf("moves %v, %d sessions; want orders moved twice and 2 sessions", second.moved, len(second.m))
	}
}

// An unreadable line that is not the torn last one means sessions were lost:
// start-up stops and names the file and line rather than serving with
// sessions the broker would not recognise (resent batches written twice).
func TestProducerSessionsDamagedLineStopsStartUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, pidStoreFile)
	content := "{\"v\":5,\"ve\":1,\"c\":\"source\",\"p\":41,\"e\":2}\n\x00\x00\x00garbage\n{\"moved\":\"orders\",\"m\":1}\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	var p producerIDs
	_, err := openPIDStore(dir, &p, hclog.NewNullLogger())
	if err == nil || !strings.Contains(err.Error(), path+" line 2") {
		t.Fatalf("error %v: want one naming %s line 2", err, path)
	}
	if b, rerr := os.ReadFile(path); rerr != nil || string(b) != content {
		t.Fatalf("the damaged file was rewritten: %q (%v)", b, rerr)
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
