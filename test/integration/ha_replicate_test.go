package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// copyStatus is the part of kproxy's /status this test reads: which
// partitions the instance copies.
type copyStatus struct {
	Instances *struct {
		Members []json.RawMessage `json:"members"`
	} `json:"instances"`
	Replication struct {
		Partitions []struct {
			Topic         string
			Partition     int32
			CopiedThrough int64
			Fenced, Fatal bool
		} `json:"partitions"`
	} `json:"replication"`
}

// copying is the partitions of topic an instance copies (not fenced, not
// stopped), from its /status, and how many members its membership view
// has; nil when it does not answer (paused).
func copying(admin, topic string) ([]int32, int) {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + admin + "/status")
	if err != nil {
		return nil, 0
	}
	defer resp.Body.Close()
	var st copyStatus
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return nil, 0
	}
	members := 0
	if st.Instances != nil {
		members = len(st.Instances.Members)
	}
	out := []int32{}
	for _, p := range st.Replication.Partitions {
		if p.Topic == topic && p.Partition >= 0 && !p.Fenced && !p.Fatal {
			out = append(out, p.Partition)
		}
	}
	slices.Sort(out)
	return out, members
}

// readPartitions reads every partition of topic in want from its start
// until it holds want[p] records (or 60 s passed), and a moment more for
// anything past them: one client for all, so a long check costs one wait.
func readPartitions(t *testing.T, boot, topic string, want map[int32]int, committed bool) map[int32][]string {
	t.Helper()
	starts := map[int32]kgo.Offset{}
	for p := range want {
		starts[p] = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{kgo.SeedBrokers(boot), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: starts})}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[int32][]string{}
	add := func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], string(r.Value)) }
	short := func() bool {
		for p, n := range want {
			if len(got[p]) < n {
				return true
			}
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for short() && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(add)
	}
	linger, lcancel := context.WithTimeout(context.Background(), time.Second)
	defer lcancel()
	for linger.Err() == nil {
		cl.PollFetches(linger).EachRecord(add)
	}
	return got
}

// Issue 14, replication ownership fenced by the broker: two `kproxy run`
// processes copy a replicated topic, each the partitions it leads. The one
// copying partitions is paused (SIGSTOP) past the membership session timeout
// while a producer writes to the source; the other takes its partitions
// over (InitProducerId fences the paused one) and copies on from the target
// log. The paused one resumes (SIGCONT) with its copy sessions still open:
// the target refuses their writes and the instance logs that it stopped
// copying. Afterwards the target holds every source record exactly once, in
// order, per partition. With the copy's transactional producers given
// per-session ids (no fencing), the resumed instance's writes land and the
// target holds records twice.
func TestPausedCopyOwnerIsFencedOnRealKafka(t *testing.T) {
	const partitions = 8
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	topic := spreadTopic("hacopy", partitions, 2)
	createTopic(t, env.source, topic, partitions)
	in := startInstances(t, 2, topic, fmt.Sprintf("routes: { default: source }\nreplicate: [%s]\n", topic))
	admins, procs, logs := in.admins, in.procs, in.logs

	cs := in.copiedOnceEach("the partitions to be copied once each", topic, partitions)
	victim := 0
	if len(cs[0]) == 0 {
		victim = 1
	}
	other := 1 - victim
	t.Logf("instance %d copies %v, instance %d copies %v", victim, cs[victim], other, cs[other])

	// A producer writes to the source all along.
	prod, err := kgo.NewClient(kgo.SeedBrokers(env.source), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var perr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			var rs []*kgo.Record
			for p := int32(0); p < partitions; p++ {
				for k := range 10 {
					rs = append(rs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "%d-%06d-%d", p, seq, k)})
				}
			}
			if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
				perr = err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second) // copying under load

	if err := procs[victim].Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := true
	defer func() {
		if paused {
			_ = procs[victim].Process.Signal(syscall.SIGCONT)
		}
	}()
	waitFor(t, "the other instance to copy every partition", func() bool {
		c, _ := copying(admins[other], topic)
		return len(c) == partitions
	})
	time.Sleep(time.Second) // the new owner copies on for a while
	// Only what the victim logs from here on counts: a handover at start
	// (the first instance copied everything until the second joined)
	// fences too.
	before := len(logs[victim].String())
	if err := procs[victim].Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	paused = false
	const fenced = "another instance took over this partition's copy"
	waitFor(t, "the resumed instance to be refused by the target", func() bool {
		return strings.Contains(logs[victim].String()[before:], fenced)
	})
	refused := 0
	for _, line := range strings.Split(logs[victim].String()[before:], "\n") {
		if strings.Contains(line, fenced) {
			if refused == 0 {
				t.Logf("instance %d after SIGCONT: %s", victim, line)
			}
			refused++
		}
	}
	t.Logf("instance %d: %d partition copies refused after SIGCONT (it copied %d before the pause)", victim, refused, len(cs[victim]))
	time.Sleep(2 * time.Second) // more traffic across the membership settling
	close(stop)
	wg.Wait()
	if perr != nil {
		t.Fatalf("producing to the source: %v", perr)
	}
	in.copiedOnceEach("the partitions to be copied once each again", topic, partitions)
	targetHoldsSource(ctx, t, topic, partitions)
}

// copiedOnceEach waits until every instance's view lists all of them and
// every partition of topic is copied by exactly one instance, and returns
// the partitions each copies.
func (in *instanceSet) copiedOnceEach(what, topic string, partitions int) [][]int32 {
	in.t.Helper()
	var cs [][]int32
	waitFor(in.t, what, func() bool {
		cs = cs[:0]
		for _, a := range in.admins {
			c, members := copying(a, topic)
			if members != len(in.admins) {
				return false
			}
			cs = append(cs, c)
		}
		all := slices.Concat(cs...)
		slices.Sort(all)
		return len(all) == partitions && len(slices.Compact(all)) == partitions
	})
	return cs
}

// targetHoldsSource checks that the target's copy of topic holds every
// source record exactly once, in order, per partition (it gives the copy
// up to a minute to catch up).
func targetHoldsSource(ctx context.Context, t *testing.T, topic string, partitions int32) {
	t.Helper()
	acl, err := kgo.NewClient(kgo.SeedBrokers(env.source))
	if err != nil {
		t.Fatal(err)
	}
	defer acl.Close()
	ends, err := kadm.NewClient(acl).ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("source end offsets: %v %v", err, ends.Error())
	}
	want := map[int32]int{}
	for p := range partitions {
		end, _ := ends.Lookup(topic, p)
		want[p] = int(end.Offset)
	}
	srcs := readPartitions(t, env.source, topic, want, false)
	for p, n := range want {
		if len(srcs[p]) != n {
			t.Fatalf("partition %d: read %d source records, its end is %d", p, len(srcs[p]), n)
		}
	}
	gots := readPartitions(t, env.target, topic, want, true)
	for p := range partitions {
		src, got := srcs[p], gots[p]
		if !slices.Equal(got, src) {
			dups := 0
			seen := map[string]bool{}
			for _, v := range got {
				if seen[v] {
					dups++
				}
				seen[v] = true
			}
			t.Fatalf("partition %d: the target holds %d records (%d duplicates), the source %d: not every source record once, in order", p, len(got), dups, len(src))
		}
	}
}
