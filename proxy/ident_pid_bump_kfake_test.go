package proxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// An idempotent producer that bumps its epoch (KIP-360 InitProducerId with
// its producer id and epoch: franz-go does so for the whole client when one
// partition's batch is refused with OUT_OF_ORDER_SEQUENCE_NUMBER) still
// resends the batches it may have written under the old epoch, with the
// old epoch and sequences: a broker de-duplicates them, because it learns
// the new epoch per partition only from a write. kproxy must too: the
// resend goes to the old epoch's upstream session, whose broker answers it
// as the duplicate it is, and the new epoch's batches get a fresh session.
// Before, the bump dropped every upstream session of the producer, the
// resend opened a fresh one, and the broker appended the batch again (the
// fault test's draining phase: 5 records written twice).
func TestResendUnderTheOldEpochAfterABumpIsAnsweredAsADuplicate(t *testing.T) {
	srv, src, _ := twoClusterProxy(t, txnRoutes(t, Source), "t")
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.MaxVersions(kversion.V3_0_0()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	initPID := func(pid int64, epoch int16) (int64, int16) {
		t.Helper()
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionTimeoutMillis, req.ProducerID, req.ProducerEpoch = -1, pid, epoch
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("InitProducerId(%d, %d): %v %v", pid, epoch, err, resp)
		}
		return resp.ProducerID, resp.ProducerEpoch
	}
	produce := func(pid int64, epoch int16, first, n int32) kmsg.ProduceResponseTopicPartition {
		t.Helper()
		return produceSeq(ctx, t, cl, "t", pid, epoch, first, n)
	}
	expect := func(what string, p kmsg.ProduceResponseTopicPartition, base int64) {
		t.Helper()
		if p.ErrorCode != 0 || p.BaseOffset != base {
			t.Errorf("%s: %v at offset %d; want offset %d", what, kerr.ErrorForCode(p.ErrorCode), p.BaseOffset, base)
		}
	}

	vpid, e0 := initPID(-1, -1)
	expect("the first batch", produce(vpid, e0, 0, 2), 0)
	// Written; its answer is the one the client never got.
	expect("the second batch", produce(vpid, e0, 2, 2), 2)
	_, e1 := initPID(vpid, e0)
	if e1 != e0+1 {
		t.Fatalf("bumped epoch %d, want %d", e1, e0+1)
	}
	expect("the second batch resent under the old epoch after the bump", produce(vpid, e0, 2, 2), 2)
	expect("the first batch of the new epoch", produce(vpid, e1, 0, 1), 4)
	if got := fmt.Sprint(countOn(t, src, "t")); got != "5" {
		t.Errorf("records on the source: %s, want 5 (a resend written again shows as more)", got)
	}
}
