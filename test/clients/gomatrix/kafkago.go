package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

func kafkagoLogger(c *config) kafka.Logger {
	if !c.verbose {
		return nil
	}
	return log.New(os.Stderr, "[kafka-go] ", log.Ltime|log.Lmicroseconds)
}

// kafkagoProduce uses kafka.Writer. Writer.WriteMessages does not return
// offsets, but the Completion callback receives every batch with Topic,
// Partition and Offset filled in from the Produce response (BaseOffset + index
// in batch) when RequiredAcks is not RequireNone. kafka-go has no idempotent
// or transactional producer.
func kafkagoProduce(ctx context.Context, c *config, em *emitter) error {
	if c.idempotent || c.transactional != "" {
		return errors.New("kafka-go supports neither idempotent nor transactional producers")
	}
	type result struct {
		partition int32
		offset    int64
		key       []byte
		value     []byte
		err       error
	}
	var mu sync.Mutex
	results := map[string]result{} // by value (values are unique)
	w := &kafka.Writer{
		Addr:                   kafka.TCP(c.bootstrap...),
		Topic:                  c.topic,
		Balancer:               &kafka.Hash{}, // sarama-compatible FNV-1a hashing of the key
		RequiredAcks:           kafka.RequireAll,
		MaxAttempts:            10,
		WriteBackoffMin:        100 * time.Millisecond,
		WriteBackoffMax:        time.Second,
		BatchSize:              100,
		BatchTimeout:           5 * time.Millisecond,
		AllowAutoTopicCreation: true,
		Logger:                 kafkagoLogger(c),
		ErrorLogger:            kafka.LoggerFunc(func(f string, a ...any) { log.Printf("[kafka-go] "+f, a...) }),
		Transport:              &kafka.Transport{ClientID: c.clientID, Dial: (&net.Dialer{Timeout: 10 * time.Second}).DialContext},
		Completion: func(msgs []kafka.Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				results[string(m.Value)] = result{int32(m.Partition), m.Offset, m.Key, m.Value, err}
			}
		},
	}
	recs := c.records()
	msgs := make([]kafka.Message, len(recs))
	for i, r := range recs {
		msgs[i] = kafka.Message{Key: r.key, Value: r.value}
	}
	// One WriteMessages call for everything: the writer batches per
	// partition and blocks until every batch completed.
	werr := w.WriteMessages(ctx, msgs...)
	if cerr := w.Close(); cerr != nil {
		em.errorf("close: %v", cerr)
	}
	// Per-message failures come back as kafka.WriteErrors (index aligned
	// with msgs); the completion callback has seen the same.
	var werrs kafka.WriteErrors
	if werr != nil && !errors.As(werr, &werrs) {
		em.errorf("write: %v", werr)
	}
	mu.Lock()
	defer mu.Unlock()
	failed := 0
	order := make([]int, 0, len(recs))
	for i := range recs {
		order = append(order, i)
	}
	sort.Ints(order)
	for _, i := range order {
		r, ok := results[string(recs[i].value)]
		switch {
		case werrs != nil && werrs[i] != nil:
			failed++
			em.errorf("send %s: %v", recs[i].value, werrs[i])
		case !ok:
			failed++
			em.errorf("send %s: no completion", recs[i].value)
		case r.err != nil:
			failed++
			em.errorf("send %s: %v", recs[i].value, r.err)
		case r.offset < 0:
			failed++
			em.errorf("send %s: completion without offset (%d)", recs[i].value, r.offset)
		default:
			em.ack(c.topic, r.partition, r.offset, r.key, r.value)
		}
	}
	if failed == 0 && werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d: %w", failed, len(recs), errSendFailed)
	}
	return nil
}

// kafkagoConsume uses kafka.Reader with a GroupID: FetchMessage, then
// synchronous CommitMessages (CommitInterval 0) every 100 records and at the
// end. kafka-go has no rebalance callback, so no rebalance events are printed.
func kafkagoConsume(ctx context.Context, c *config, em *emitter) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:          c.bootstrap,
		GroupID:          c.group,
		Topic:            c.topic,
		StartOffset:      kafka.FirstOffset,
		IsolationLevel:   kafka.ReadCommitted,
		MinBytes:         1,
		MaxBytes:         10 << 20,
		MaxWait:          250 * time.Millisecond,
		CommitInterval:   0,
		Dialer:           &kafka.Dialer{ClientID: c.clientID, Timeout: 10 * time.Second, DualStack: true},
		Logger:           kafkagoLogger(c),
		ErrorLogger:      kafka.LoggerFunc(func(f string, a ...any) { log.Printf("[kafka-go] "+f, a...) }),
		ReadBackoffMin:   50 * time.Millisecond,
		ReadBackoffMax:   500 * time.Millisecond,
		JoinGroupBackoff: time.Second,
	})
	st := newConsumeState(c)
	var pending []kafka.Message
	var commitErr error
	// Commits use their own deadline: the fetch context is cancelled as
	// soon as the last wanted record arrived.
	commit := func() {
		if len(pending) == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := r.CommitMessages(cctx, pending...); err != nil {
			em.errorf("commit: %v", err)
			commitErr = err
			return
		}
		pending = pending[:0]
	}

	fetchCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-st.done:
			stop()
		case <-fetchCtx.Done():
		}
	}()
	var err error
	for {
		m, ferr := r.FetchMessage(fetchCtx)
		if ferr != nil {
			if fetchCtx.Err() != nil {
				if ctx.Err() != nil {
					log.Printf("timeout: consumed %d of %d", st.count(), c.count)
				}
				break
			}
			if errors.Is(ferr, io.EOF) { // reader closed
				err = fmt.Errorf("fetch: %w", ferr)
				break
			}
			// Group and connection errors (e.g. a broker or proxy going
			// away) surface here; the reader keeps trying, so do we,
			// until the deadline.
			em.errorf("fetch: %v", ferr)
			err = fmt.Errorf("fetch: %w", ferr)
			select {
			case <-fetchCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		err = nil
		if !st.take() {
			break
		}
		em.record("consume", c.consumer, m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value)
		pending = append(pending, m)
		if len(pending) >= 100 {
			commit()
		}
	}
	commitErr = nil
	commit()
	if cerr := r.Close(); cerr != nil {
		em.errorf("close: %v", cerr)
	}
	log.Printf("consumed %d records", st.count())
	if err == nil && commitErr != nil {
		err = fmt.Errorf("commit: %w", commitErr)
	}
	return err
}
