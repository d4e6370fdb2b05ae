package control

// The control topic (docs/ha.md, "Shared state: the control topic"): one
// compacted topic, _kproxy-<cluster_id>-state, on the control cluster,
// shared by every instance of one virtual cluster. Records are keyed
// `kind/name` with JSON values. Each instance reads the topic to its end
// before it relies on it (open) and follows it while running, so every
// instance sees every record in the same order: the topic has a single
// partition, and the coordinated flip (coordflip.go) relies on that order.
//
// What an instance publishes it reads back through the same follower
// (put waits until it did), so an instance's view never runs ahead of what
// the others can read.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StateTopicName is the control topic of a virtual cluster.
func StateTopicName(clusterID string) string { return "_kproxy-" + clusterID + "-state" }

// stateTopic is this instance's reader and writer of the control topic.
type stateTopic struct {
	log   hclog.Logger
	topic string
	cl    *kgo.Client // produces and follows
	stop  context.CancelFunc
	done  chan struct{} // closed when follow returns

	mu      sync.Mutex // guards the fields below
	vals    map[string]json.RawMessage
	offs    map[string]int64 // each key's record offset: compaction keeps it
	next    int64            // the offset after the last record applied
	changed chan struct{}    // closed (and replaced) at every applied record
	err     error            // set when follow stopped: waiters give up
	watches []stateWatch     // called at every record applied (watch)
}

// stateWatch is one watch: f is called for every record whose key starts
// with prefix.
type stateWatch struct {
	prefix string
	f      func(key string, val json.RawMessage, offset int64)
}

// stateRecord is one record as put writes it: key and value.
type stateRecord struct {
	Key   string
	Value any // JSON-encoded; nil writes a tombstone
}

// openStateTopic creates the control topic if it is missing (one
// partition, compacted), then follows it from its start and returns once
// every record present at open was read. newClient makes a client of the
// control cluster with the options given (secure.Client).
func openStateTopic(ctx context.Context, log hclog.Logger, topic string, newClient func(...kgo.Opt) (*kgo.Client, error)) (*stateTopic, error) {
	cl, err := newClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	if err != nil {
		return nil, err
	}
	if err := createStateTopic(ctx, kadm.NewClient(cl), topic); err != nil {
		cl.Close()
		return nil, err
	}
	// A topic just created may not be known to every broker yet.
	var ends kadm.ListedOffsets
	for {
		ends, err = kadm.NewClient(cl).ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil || !kerr.IsRetriable(err) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("control topic %s: listing its end: %w", topic, err)
	}
	end := int64(0)
	if o, ok := ends.Lookup(topic, 0); ok {
		end = o.Offset
	}
	fctx, stop := context.WithCancel(context.Background())
	s := &stateTopic{log: log, topic: topic, cl: cl, stop: stop, done: make(chan struct{}),
		vals: map[string]json.RawMessage{}, offs: map[string]int64{}, changed: make(chan struct{})}
	go s.follow(fctx)
	if err := s.waitRead(ctx, end); err != nil {
		s.Close()
		return nil, fmt.Errorf("control topic %s: reading it to its end (offset %d): %w", topic, end, err)
	}
	return s, nil
}

// createStateTopic creates the control topic, compacted, with the
// cluster's default replication; one that exists is left as it is.
func createStateTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	compact := "compact"
	resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("control topic %s: %w", topic, err)
	}
	return nil
}

// follow applies every record of the topic, in order, until ctx ends.
func (s *stateTopic) follow(ctx context.Context) {
	defer close(s.done)
	defer func() {
		s.mu.Lock()
		s.err = errors.New("the control topic is closed")
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}()
	for {
		fs := s.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(_ string, _ int32, err error) {
			s.log.Warn("reading the control topic", "topic", s.topic, "error", err)
		})
		s.mu.Lock()
		applied := false
		fs.EachRecord(func(r *kgo.Record) {
			k := string(r.Key)
			for _, w := range s.watches {
				if strings.HasPrefix(k, w.prefix) {
					w.f(k, r.Value, r.Offset)
				}
			}
			if r.Value == nil {
				delete(s.vals, k)
				delete(s.offs, k)
			} else {
				s.vals[k] = json.RawMessage(r.Value)
				s.offs[k] = r.Offset
			}
			s.next = r.Offset + 1
			applied = true
		})
		if applied {
			close(s.changed)
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
	}
}

// waitRead waits until every record below offset was applied. The topic
// is written without transactions, so its last offset always holds a
// record (compaction never cleans the active segment).
func (s *stateTopic) waitRead(ctx context.Context, offset int64) error {
	for {
		s.mu.Lock()
		next, ch, err := s.next, s.changed, s.err
		s.mu.Unlock()
		if next >= offset {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// put publishes records, in order, and returns once this instance's
// follower read the last of them: everything that reads the topic after
// put returns sees them.
func (s *stateTopic) put(ctx context.Context, recs ...stateRecord) error {
	var last int64 = -1
	for _, r := range recs {
		var v []byte
		if r.Value != nil {
			var err error
			if v, err = json.Marshal(r.Value); err != nil {
				return err
			}
		}
		res := s.cl.ProduceSync(ctx, &kgo.Record{Topic: s.topic, Partition: 0, Key: []byte(r.Key), Value: v})
		rec, err := res.First()
		if err != nil {
			return fmt.Errorf("control topic %s: writing %s: %w", s.topic, r.Key, err)
		}
		last = rec.Offset
	}
	return s.waitRead(ctx, last+1)
}

// get decodes the value of key into v; false when the key has none.
func (s *stateTopic) get(key string, v any) (bool, error) {
	s.mu.Lock()
	raw, ok := s.vals[key]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

// offset is the offset of key's record (false when it has none). Two
// records of different keys are ordered by it the same way on every
// instance, before and after compaction.
func (s *stateTopic) offset(key string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.offs[key]
	return o, ok
}

// keys lists the keys with a value that start with prefix.
func (s *stateTopic) keys(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.vals {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// watch calls f for every key starting with prefix: at once for each
// value present, then for every record applied (val nil: a tombstone), in
// the topic's order. f runs under the topic's lock: it must not block nor
// call the topic. Tables that need their own index of some keys (the
// producer sessions, sessions.go) build it with watch.
func (s *stateTopic) watch(prefix string, f func(key string, val json.RawMessage, offset int64)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.vals {
		if strings.HasPrefix(k, prefix) {
			f(k, v, s.offs[k])
		}
	}
	s.watches = append(s.watches, stateWatch{prefix, f})
}

// changes is closed at the next record applied.
func (s *stateTopic) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Close stops following and closes the client.
func (s *stateTopic) Close() {
	s.stop()
	<-s.done
	s.cl.Close()
}
