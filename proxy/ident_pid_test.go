package proxy

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A batch from a virtual producer leaves with the cluster's PID and epoch,
// its sequence untouched and a CRC that matches again; a batch from a real
// (transactional) PID is left byte for byte.
func TestRewriteProducerIDKeepsSequenceAndFixesCRC(t *testing.T) {
	srv := &Server{}
	srv.pids.m = map[pidKey]upstreamPID{}
	vpid := newVirtualPID()
	srv.pids.m[pidKey{vpid, 3, Target}] = upstreamPID{pid: 4001, epoch: 7}
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
	srv.pids.m[pidKey{first.ProducerID, 0, Source}] = upstreamPID{1, 0}
	req.ProducerID, req.ProducerEpoch = first.ProducerID, 0
	bumped := srv.initVirtualProducer(req)
	if bumped.ProducerID != first.ProducerID || bumped.ProducerEpoch != 1 || len(srv.pids.m) != 0 {
		t.Fatalf("bump: %d/%d, %d sessions left", bumped.ProducerID, bumped.ProducerEpoch, len(srv.pids.m))
	}
	req.ProducerID = 5
	if r := srv.initVirtualProducer(req); r.ErrorCode == 0 {
		t.Fatalf("a real PID was accepted for a bump")
	}
}
