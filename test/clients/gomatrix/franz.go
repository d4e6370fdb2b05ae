package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func franzOpts(c *config) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.bootstrap...),
		kgo.ClientID(c.clientID),
		kgo.AllowAutoTopicCreation(),
	}
	if c.verbose {
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, nil)))
	} else {
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)))
	}
	return append(opts, c.secure.franz()...)
}

// franzProduce produces with a promise per record; each promise gets the
// record back with Partition and Offset filled in from the Produce response.
func franzProduce(ctx context.Context, c *config, em *emitter) error {
	topics := c.topics()
	opts := append(franzOpts(c),
		kgo.DefaultProduceTopic(topics[0]),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordRetries(10),
	)
	if c.transactional != "" {
		opts = append(opts, kgo.TransactionalID(c.transactional))
	} else if !c.idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()

	recs := c.records()
	failed := 0
	for startIdx := 0; startIdx < len(recs); startIdx += c.txnSize {
		chunk := recs[startIdx:min(startIdx+c.txnSize, len(recs))]
		if c.transactional != "" {
			if err := cl.BeginTransaction(); err != nil {
				return fmt.Errorf("begin txn: %w", err)
			}
		}
		done := make([]*kgo.Record, len(chunk))
		errs := make([]error, len(chunk))
		var wg sync.WaitGroup
		for i, r := range chunk {
			wg.Add(1)
			topic := topics[r.idx%len(topics)]
			cl.Produce(ctx, &kgo.Record{Topic: topic, Key: r.key, Value: r.value}, func(rec *kgo.Record, err error) {
				defer wg.Done()
				done[i], errs[i] = rec, err
			})
		}
		wg.Wait()
		chunkFailed := 0
		for i, err := range errs {
			if err != nil {
				chunkFailed++
				em.errorf("send %s: %v", chunk[i].value, err)
			}
		}
		if c.transactional != "" {
			commit := kgo.TryCommit
			if chunkFailed > 0 {
				commit = kgo.TryAbort
			}
			ectx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := cl.EndTransaction(ectx, commit)
			cancel()
			if err != nil || chunkFailed > 0 {
				if err != nil {
					em.errorf("end txn: %v", err)
				}
				failed += len(chunk)
				continue
			}
		}
		failed += chunkFailed
		for i, rec := range done {
			if errs[i] == nil {
				em.ack(rec.Topic, rec.Partition, rec.Offset, rec.Key, rec.Value)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d: %w", failed, len(recs), errSendFailed)
	}
	return nil
}

// franzConsume uses a group consumer with AutoCommitMarks: only records that
// were printed are marked, committed periodically, on revoke and at the end.
func franzConsume(ctx context.Context, c *config, em *emitter) error {
	opts := append(franzOpts(c),
		kgo.ConsumerGroup(c.group),
		kgo.ConsumeTopics(c.topics()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			em.rebalance(c.consumer, fmt.Sprintf("assigned %v", m))
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			em.rebalance(c.consumer, fmt.Sprintf("revoked %v", m))
			if err := cl.CommitMarkedOffsets(ctx); err != nil {
				em.errorf("commit on revoke: %v", err)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			em.rebalance(c.consumer, fmt.Sprintf("lost %v", m))
		}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	st := newConsumeState(c)
	pollCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-st.done:
			stop()
		case <-pollCtx.Done():
		}
	}()
	var runErr error
loop:
	for pollCtx.Err() == nil {
		fs := cl.PollRecords(pollCtx, 1000)
		for _, e := range fs.Errors() {
			if pollCtx.Err() != nil {
				break loop
			}
			em.errorf("fetch %s[%d]: %v", e.Topic, e.Partition, e.Err)
		}
		var marks []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			if !st.take() {
				return
			}
			em.record("consume", c.consumer, r.Topic, r.Partition, r.Offset, r.Key, r.Value)
			marks = append(marks, r)
		})
		cl.MarkCommitRecords(marks...)
		// Flush per poll so a caller watching stdout sees records as they
		// arrive (long-running consumers never fill the buffer).
		em.flush()
	}
	if ctx.Err() != nil && st.count() < c.count {
		log.Printf("timeout: consumed %d of %d", st.count(), c.count)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := cl.CommitMarkedOffsets(cctx); err != nil {
		runErr = fmt.Errorf("final commit: %w", err)
	}
	cl.LeaveGroup()
	cl.Close()
	log.Printf("consumed %d records", st.count())
	return runErr
}
