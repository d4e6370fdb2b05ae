package control

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// Topics start in batches, several batches at a time, never more than
// topicStarts, every topic once, and the first error is returned after all
// ended.
func TestStartTopicsConcurrentlyWithABound(t *testing.T) {
	var running, peak, done atomic.Int32
	gate := make(chan struct{})
	var once sync.Once
	topics := make([]string, 3*5*topicStarts+2)
	for i := range topics {
		topics[i] = fmt.Sprintf("t%03d", i)
	}
	boom := errors.New("boom")
	seen := map[string]int{}
	var seenMu sync.Mutex
	err := startTopics(topics, 3, func(batch []string) error {
		if len(batch) > 3 {
			t.Errorf("a batch of %d topics, want at most 3", len(batch))
		}
		seenMu.Lock()
		for _, topic := range batch {
			seen[topic]++
		}
		seenMu.Unlock()
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n == topicStarts {
			once.Do(func() { close(gate) })
		}
		<-gate // every start waits until topicStarts run at once
		done.Add(int32(len(batch)))
		if slices.Contains(batch, "t007") {
			return boom
		}
		return nil
	})
	for _, topic := range topics {
		if seen[topic] != 1 {
			t.Errorf("%s started %d times", topic, seen[topic])
		}
	}
	if !errors.Is(err, boom) {
		t.Errorf("error = %v, want boom", err)
	}
	if int(done.Load()) != len(topics) {
		t.Errorf("%d of %d topics started", done.Load(), len(topics))
	}
	if peak.Load() != topicStarts {
		t.Errorf("peak %d topics at once, want %d", peak.Load(), topicStarts)
	}
}
