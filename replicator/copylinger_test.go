package replicator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// trickle produces n one-record batches, one per Produce request, to
// topic's partitions in turn, values "<topic>-<i>", pausing between them
// so the copy sees them arrive one by one.
func (pp *kfakePair) trickle(t *testing.T, topic string, parts int32, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		r := &kgo.Record{Topic: topic, Partition: int32(i) % parts, Value: []byte(fmt.Sprintf("%s-%d", topic, i))}
		if err := pp.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// checkTrickleCopied checks that the target has every record of a trickle
// (after startPair's one record per partition) once, in order.
func checkTrickleCopied(t *testing.T, pp *kfakePair, topic string, parts int32, n int) {
	t.Helper()
	for p := int32(0); p < parts; p++ {
		var want []string
		for i := int(p); i < n; i += int(parts) {
			want = append(want, fmt.Sprintf("%s-%d", topic, i))
		}
		pp.waitCopiedUnurged(t, topic, p, int64(1+len(want)))
		got := readAll(t, pp.tgt.ListenAddrs(), topic, p, int64(1+len(want)))
		if len(got) != 1+len(want) {
			t.Fatalf("%s/%d: %d records on the target, want %d", topic, p, len(got), 1+len(want))
		}
		for i, w := range want {
			if r := got[1+i]; string(r.Value) != w || r.Offset != int64(1+i) {
				t.Fatalf("%s/%d: record at offset %d is %q, want %q at %d", topic, p, r.Offset, r.Value, w, 1+i)
			}
		}
	}
}

// A trickle of small batches (one record per Produce request) is fetched
// many batches to an answer: while the copy flows, the session request
// asks copyMinBytes and lingers, instead of being answered by each batch as
// it arrives (before: about one fetch per batch). Every record still
// reaches the target once, in order.
func TestTrickleIsFetchedManyBatchesToAnAnswer(t *testing.T) {
	const parts, n = 2, 80
	// A long linger makes the count independent of the machine's speed:
	// the whole trickle fits in a few lingering polls.
	pp := startPair(t, []string{"t"}, parts, Options{CopyLinger: 400 * time.Millisecond})
	mark := pp.log.len()
	pp.trickle(t, "t", parts, n)
	checkTrickleCopied(t, pp, "t", parts, n)
	seen := pp.log.since(mark)
	lingered := 0
	for _, s := range seen {
		if s.minBytes > 1 {
			lingered++
			if s.minBytes != copyMinBytes || s.maxWait != 400 {
				t.Fatalf("a lingering fetch asked MinBytes %d, MaxWait %d ms; want %d, 400", s.minBytes, s.maxWait, copyMinBytes)
			}
		}
	}
	if lingered == 0 || len(seen) > n/4 {
		t.Fatalf("%d source fetches (%d lingering) copied %d one-record batches; want at most %d", len(seen), lingered, n, n/4)
	}
	checkNoPartitionErrors(t, pp.r)
}

// CopyLinger < 0 turns the linger off: every fetch asks MinBytes 1.
func TestCopyLingerOff(t *testing.T) {
	const parts, n = 2, 20
	pp := startPair(t, []string{"t"}, parts, Options{CopyLinger: -1})
	mark := pp.log.len()
	pp.trickle(t, "t", parts, n)
	checkTrickleCopied(t, pp, "t", parts, n)
	for _, s := range pp.log.since(mark) {
		if s.minBytes != 1 {
			t.Fatalf("a fetch asked MinBytes %d with the linger off", s.minBytes)
		}
	}
}

// An urgent partition (a cutover waits on it) is not held back by the
// linger: while another topic's trickle keeps the session lingering, the
// urgent topic's sessionless fetches ask MinBytes 1 and poll
// urgentFetchWait, and its records are copied once, in order.
func TestUrgentFetchesDoNotLinger(t *testing.T) {
	const parts, n = 2, 60
	pp := startPair(t, []string{"a", "b"}, parts, Options{CopyLinger: 400 * time.Millisecond})
	release := pp.r.Urge("a")
	defer release()
	mark := pp.log.len()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pp.trickle(t, "b", parts, n)
	}()
	pp.trickle(t, "a", parts, n)
	wg.Wait()
	checkTrickleCopied(t, pp, "a", parts, n)
	checkTrickleCopied(t, pp, "b", parts, n)
	sessionless, lingered := 0, 0
	for _, s := range pp.log.since(mark) {
		if s.epoch == -1 {
			sessionless++
			if s.minBytes != 1 || s.maxWait != int32(urgentFetchWait/time.Millisecond) {
				t.Fatalf("an urgent fetch asked MinBytes %d, MaxWait %d ms; want 1, %d", s.minBytes, s.maxWait, urgentFetchWait/time.Millisecond)
			}
		} else if s.minBytes > 1 {
			lingered++
		}
	}
	if sessionless == 0 || lingered == 0 {
		t.Fatalf("%d urgent fetches, %d lingering session fetches; the test wants both", sessionless, lingered)
	}
	checkNoPartitionErrors(t, pp.r)
}
