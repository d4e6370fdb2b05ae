package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

func saramaConfig(c *config) (*sarama.Config, error) {
	cfg := sarama.NewConfig()
	cfg.ClientID = c.clientID
	if c.kafkaVersion != "" {
		v, err := sarama.ParseKafkaVersion(c.kafkaVersion)
		if err != nil {
			return nil, err
		}
		cfg.Version = v
	}
	if c.verbose {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Ltime|log.Lmicroseconds)
	}
	cfg.Metadata.AllowAutoTopicCreation = true
	c.secure.sarama(cfg)
	return cfg, nil
}

func saramaProduce(ctx context.Context, c *config, em *emitter) error {
	cfg, err := saramaConfig(c)
	if err != nil {
		return err
	}
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Retry.Max = 10
	cfg.Producer.Retry.Backoff = 250 * time.Millisecond
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	if c.idempotent || c.transactional != "" {
		cfg.Producer.Idempotent = true
		cfg.Net.MaxOpenRequests = 1
	}
	if c.transactional != "" {
		cfg.Producer.Transaction.ID = c.transactional
	}
	p, err := sarama.NewAsyncProducer(c.bootstrap, cfg)
	if err != nil {
		return fmt.Errorf("new producer: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			p.AsyncClose()
		}
	}()

	recs := c.records()
	failed := 0
	for startIdx := 0; startIdx < len(recs); startIdx += c.txnSize {
		chunk := recs[startIdx:min(startIdx+c.txnSize, len(recs))]
		if c.transactional != "" {
			if err := p.BeginTxn(); err != nil {
				return fmt.Errorf("begin txn: %w", err)
			}
		}
		// Feed and collect concurrently: the producer blocks on Input when
		// its results are not drained.
		go func() {
			for i := range chunk {
				select {
				case p.Input() <- &sarama.ProducerMessage{Topic: c.topic, Key: sarama.ByteEncoder(chunk[i].key),
					Value: sarama.ByteEncoder(chunk[i].value), Metadata: i}:
				case <-ctx.Done():
					return
				}
			}
		}()
		type result struct {
			partition int32
			offset    int64
		}
		ok := make(map[int]result, len(chunk))
		chunkFailed := 0
		for n := 0; n < len(chunk); n++ {
			select {
			case m := <-p.Successes():
				ok[m.Metadata.(int)] = result{m.Partition, m.Offset}
			case pe := <-p.Errors():
				chunkFailed++
				em.errorf("send %s: %v", pe.Msg.Value, pe.Err)
			case <-ctx.Done():
				return fmt.Errorf("timeout: %d of %d records of this batch unanswered: %w", len(chunk)-n, len(chunk), ctx.Err())
			}
		}
		if c.transactional != "" {
			if chunkFailed == 0 {
				err = p.CommitTxn()
			}
			if chunkFailed > 0 || err != nil {
				if err != nil {
					em.errorf("commit txn: %v", err)
				}
				if aerr := p.AbortTxn(); aerr != nil {
					em.errorf("abort txn: %v", aerr)
				}
				failed += len(chunk)
				continue
			}
		}
		failed += chunkFailed
		// Print acks in send order (the checker does not care, humans do).
		idx := make([]int, 0, len(ok))
		for i := range ok {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		for _, i := range idx {
			em.ack(c.topic, ok[i].partition, ok[i].offset, chunk[i].key, chunk[i].value)
		}
	}
	closed = true
	if err := p.Close(); err != nil {
		em.errorf("close: %v", err)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d: %w", failed, len(recs), errSendFailed)
	}
	return nil
}

type saramaHandler struct {
	c  *config
	em *emitter
	st *consumeState
}

func (h *saramaHandler) Setup(s sarama.ConsumerGroupSession) error {
	h.em.rebalance(h.c.consumer, fmt.Sprintf("assigned %v generation %d", s.Claims(), s.GenerationID()))
	return nil
}

func (h *saramaHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	return nil
}

func (h *saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	defer s.Commit()
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !h.st.take() {
				return nil
			}
			h.em.record("consume", h.c.consumer, m.Topic, m.Partition, m.Offset, m.Key, m.Value)
			s.MarkMessage(m, "")
		case <-h.st.done:
			return nil
		case <-s.Context().Done():
			return nil
		}
	}
}

func saramaConsume(ctx context.Context, c *config, em *emitter) error {
	cfg, err := saramaConfig(c)
	if err != nil {
		return err
	}
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = time.Second
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	cfg.Consumer.Return.Errors = true
	if cfg.Version.IsAtLeast(sarama.V2_3_0_0) {
		cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	}
	g, err := sarama.NewConsumerGroup(c.bootstrap, c.group, cfg)
	if err != nil {
		return fmt.Errorf("new consumer group: %w", err)
	}
	st := newConsumeState(c)
	h := &saramaHandler{c: c, em: em, st: st}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for e := range g.Errors() {
			em.errorf("consumer group: %v", e)
		}
	}()
	loopErr := make(chan error, 1)
	go func() {
		for {
			if err := g.Consume(runCtx, []string{c.topic}, h); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) || runCtx.Err() != nil {
					loopErr <- nil
					return
				}
				em.errorf("consume: %v", err)
				time.Sleep(time.Second)
			}
			if runCtx.Err() != nil {
				loopErr <- nil
				return
			}
		}
	}()
	select {
	case <-st.done:
	case <-ctx.Done():
		log.Printf("timeout: consumed %d of %d", st.count(), c.count)
	}
	stop()
	err = <-loopErr
	// Close commits the marked offsets (auto-commit is on) and leaves.
	if cerr := g.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	wg.Wait()
	log.Printf("consumed %d records", st.count())
	return err
}
