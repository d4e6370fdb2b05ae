package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/hatest"
)

// adminStatus is the part of an instance's /status the instance tests
// read: its cutovers and its group moves.
type adminStatus struct {
	Cutovers   []struct{ Topic, State, Home, Reason string } `json:"cutovers"`
	GroupMoves []struct{ Group, State, To, Reason string }   `json:"group_moves"`
}

// statusOf reads an instance's /status; false when it does not answer.
func statusOf(admin string) (adminStatus, bool) {
	var st adminStatus
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + admin + "/status")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}

// cutoverOf is an instance's /status cutover of topic: state and home
// ("" when it does not answer or has none).
func cutoverOf(admin, topic string) (state, home, reason string) {
	st, _ := statusOf(admin)
	for _, c := range st.Cutovers {
		if c.Topic == topic {
			return c.State, c.Home, c.Reason
		}
	}
	return "", "", ""
}

// flipConfig is the tail of startInstances for a replicated topic routed
// to home (source: the route of the start, nothing flipped yet).
func flipConfig(topic, home string, note int) string {
	route := ""
	if home != "source" {
		route = fmt.Sprintf("  topics: { %s: %s }\n", topic, home)
	}
	return fmt.Sprintf("# edit %d\nroutes:\n  default: source\n%sreplicate: [%s]\nreplication: { reverse_after_cutover: true }\ncutover: { max_hold: 20s }\n", note, route, topic)
}

// reroute rewrites the config files of the instances in order (a
// ConfigMap edit reaching the pods one by one) with topic routed to home.
func (in *instanceSet) reroute(topic, home string, note int, order ...int) {
	in.t.Helper()
	for _, i := range order {
		body, err := os.ReadFile(in.cfgs[i])
		if err != nil {
			in.t.Fatal(err)
		}
		head, _, ok := strings.Cut(string(body), "# edit ")
		if !ok {
			head, _, _ = strings.Cut(string(body), "routes:")
		}
		writeConfig(in.t, in.cfgs[i], head+flipConfig(topic, home, note))
	}
}

// flipped waits until every instance in live serves topic from home with
// its flip over; an attempt every instance saw abort (a membership
// hiccup under load makes the driver abort, as it must) is asked for
// again with a fresh edit. It returns the attempts it took.
func (in *instanceSet) flipped(ctx context.Context, topic, home string, live ...int) int {
	in.t.Helper()
	return in.everywhere(ctx, "flip", home, "flipped", live,
		func(note int) { in.reroute(topic, home, note, live...) },
		func(admin string) (string, string, string) { return cutoverOf(admin, topic) })
}

// everywhere makes edit (with a note that differs per attempt and home)
// and waits until every instance in live shows state (its /status, read by
// of: state, where to, reason) as done with home; an attempt every
// instance saw abort (a membership hiccup under load makes the driver
// abort, as it must) is asked for again with a fresh edit, up to four. It
// returns the attempts it took. what names the change in messages.
func (in *instanceSet) everywhere(ctx context.Context, what, home, done string, live []int, edit func(note int), of func(admin string) (state, to, why string)) int {
	in.t.Helper()
	for attempt := 1; ; attempt++ {
		edit(attempt + 10*len(home))
		edited := time.Now()
		for {
			all, aborted := true, false
			var states []string
			for _, i := range live {
				st, to, why := of(in.admins[i])
				states = append(states, fmt.Sprintf("kproxy-%d: %s to %s %s", i, st, to, why))
				all = all && st == done && to == home
				aborted = aborted || st == "aborted"
			}
			if all {
				return attempt
			}
			// An abort shown in the first second may be the last
			// attempt's, before this edit's change began.
			if aborted && attempt < 4 && time.Since(edited) > time.Second {
				in.t.Logf("the %s to the %s aborted: %v; asking again", what, home, states)
				time.Sleep(500 * time.Millisecond)
				break
			}
			if ctx.Err() != nil {
				in.t.Fatalf("the %s to the %s never ended everywhere: %v", what, home, states)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// produceLoad produces to every partition through the instances until
// the returned stop is called.
func produceLoad(ctx context.Context, tr *hatest.Traffic) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			tr.Produce(ctx, 1)
		}
	}()
	return func() { close(done); wg.Wait() }
}

// startFlipSet starts three instances copying a new topic of partitions
// spread over all three, each partition copied once, with traffic that
// produced and read 20 records per partition through them.
func startFlipSet(t *testing.T, ctx context.Context, prefix string, partitions int32) (*instanceSet, string, *hatest.Traffic) {
	t.Helper()
	topic := spreadTopic(prefix, partitions, 3)
	createTopic(t, env.source, topic, partitions)
	in := startInstances(t, 3, topic, flipConfig(topic, "source", 0))
	in.copiedOnceEach("each partition copied once", topic, int(partitions))
	tr, err := hatest.NewTraffic(in.addrs, topic, partitions, topic+"-g")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	tr.Produce(ctx, 20)
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	return in, topic, tr
}

// checkTraffic settles the traffic and fails on the checker's verdict.
func checkTraffic(t *testing.T, ctx context.Context, tr *hatest.Traffic) {
	t.Helper()
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	verdict, err := tr.Check()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(verdict)
}

// Issue 14, coordinated cutover on real Kafka: three `kproxy run`
// processes serve a replicated topic under produce and consume load; the
// config edit reaches them one by one, the driver (kproxy-0, the lowest
// id) last; they flip the topic to the target together through the
// control topic, and back (rollback). Every acknowledged record is read
// once and in order, and afterwards the target's log equals the source's
// record for record: no record reached the cluster a topic had left (the
// topic never took produce on both), and each home's records were copied
// to the other once.
func TestThreeInstancesFlipAReplicatedTopicOnRealKafka(t *testing.T) {
	const partitions = 6
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	in, topic, tr := startFlipSet(t, ctx, "haflip", partitions)

	stop := produceLoad(ctx, tr)
	start := time.Now()
	n := in.flipped(ctx, topic, "target", 2, 1, 0)
	t.Logf("flipped to the target in %s (%d attempt(s))", time.Since(start).Round(time.Millisecond), n)
	time.Sleep(time.Second) // load on the new home
	start = time.Now()
	n = in.flipped(ctx, topic, "source", 1, 2, 0)
	t.Logf("rolled back to the source in %s (%d attempt(s))", time.Since(start).Round(time.Millisecond), n)
	time.Sleep(time.Second)
	stop()
	checkTraffic(t, ctx, tr)
	bothHoldTraffic(t, tr, topic, partitions)
}

// Issue 14: an instance SIGKILLed while a coordinated flip holds. It is
// paused first (SIGSTOP), so that the flip it is a member of is held
// open waiting for its answer when the kill lands; the driver sees it
// leave the membership and aborts the flip (a kill after the decision
// would let it complete: either is right). The two left release the held
// produce on the source, and never a split: the checker finds every
// acknowledged record once and in order, and the target holds the
// source's records once each. The killed instance comes back (its pod
// restarted) and the three flip the topic.
func TestCoordinatedFlipWithAnInstanceKilledMidHoldOnRealKafka(t *testing.T) {
	const partitions = 6
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	in, topic, tr := startFlipSet(t, ctx, "haflipkill", partitions)
	const victim = 2 // not the driver

	stop := produceLoad(ctx, tr)
	if err := in.procs[victim].Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	in.reroute(topic, "target", 1, victim, 1, 0)
	waitFor(t, "the others to hold the topic", func() bool {
		for _, i := range []int{0, 1} {
			if st, _, _ := cutoverOf(in.admins[i], topic); st != "holding" && st != "draining" {
				return false
			}
		}
		return true
	})
	_ = in.procs[victim].Process.Signal(syscall.SIGKILL)
	_ = in.procs[victim].Process.Signal(syscall.SIGCONT)
	_ = in.procs[victim].Wait()
	killed := time.Now()
	var outcome string
	waitFor(t, "the flip to end on the two left", func() bool {
		s0, h0, why := cutoverOf(in.admins[0], topic)
		s1, h1, _ := cutoverOf(in.admins[1], topic)
		if s0 == s1 && (s0 == "aborted" || s0 == "flipped") && h0 == h1 {
			outcome = fmt.Sprintf("%s, home %s (%s)", s0, h0, why)
			return true
		}
		return false
	})
	t.Logf("the flip ended %s after the kill: %s", time.Since(killed).Round(time.Millisecond), outcome)
	time.Sleep(time.Second) // load after the outcome
	stop()
	checkTraffic(t, ctx, tr)
	bothHoldTraffic(t, tr, topic, partitions)

	// The killed instance restarts (same id, address and state_dir) and
	// the three flip together.
	in.start(victim)
	in.copiedOnceEach("each partition copied once again", topic, partitions)
	stop = produceLoad(ctx, tr)
	in.flipped(ctx, topic, "target", victim, 1, 0)
	time.Sleep(time.Second)
	stop()
	checkTraffic(t, ctx, tr)
	bothHoldTraffic(t, tr, topic, partitions)
}

// bothHoldTraffic checks each cluster's log of topic, read committed:
// every partition holds the traffic's records p<p>/0, p<p>/1, ... once
// each and in order, on both (the copy gets up to a minute to catch up).
// A record produced to the cluster a topic had left, or copied twice,
// shows as a duplicate or a value out of sequence.
func bothHoldTraffic(t *testing.T, tr *hatest.Traffic, topic string, partitions int32) {
	t.Helper()
	want := map[int32]int{}
	for p := range partitions {
		want[p] = tr.ProducedTo(p)
	}
	for _, c := range []struct{ name, boot string }{{"source", env.source}, {"target", env.target}} {
		logs := readPartitions(t, c.boot, topic, want, true)
		for p, n := range want {
			l := logs[p]
			if len(l) != n {
				t.Fatalf("%s: partition %d holds %d records, want %d", c.name, p, len(l), n)
			}
			for i, v := range l {
				if v != fmt.Sprintf("p%d/%d", p, i) {
					t.Fatalf("%s: partition %d's record %d is %q, want p%d/%d", c.name, p, i, v, p, i)
				}
			}
		}
	}
}
