package main

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// createTopic creates -topic with -partitions partitions and
// -replication-factor replicas (franz-go kadm); an existing topic with the same
// partition count is fine. Used by the e2e scripts because brokers default
// to one partition per auto-created topic.
func createTopic(ctx context.Context, c *config) error {
	cl, err := kgo.NewClient(franzOpts(c)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, c.partitions, c.replicationFactor, nil, c.topics()...)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", c.topic, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err == nil {
			log.Printf("created %s with %d partitions", r.Topic, c.partitions)
			continue
		}
		if !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w (%s)", r.Topic, r.Err, r.ErrMessage)
		}
		md, err := adm.ListTopics(ctx, r.Topic)
		if err != nil {
			return fmt.Errorf("describe %s: %w", r.Topic, err)
		}
		if n := len(md[r.Topic].Partitions); n != int(c.partitions) {
			return fmt.Errorf("topic %s exists with %d partitions, want %d", r.Topic, n, c.partitions)
		}
		log.Printf("topic %s already exists with %d partitions", r.Topic, c.partitions)
	}
	return nil
}
