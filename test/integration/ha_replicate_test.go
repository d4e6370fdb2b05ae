package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// readPartition reads a partition from its start until it holds want
// records (or 60 s passed), and a moment more for anything past them.
func readPartition(t *testing.T, boot, topic string, partition int32, want int, committed bool) []string {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(boot), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}})}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []string
	for len(got) < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	short, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	cl.PollFetches(short).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
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
	topic := fmt.Sprintf("hacopy-%d", time.Now().UnixNano())
	createTopic(t, env.source, topic, partitions)
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	var admins []string
	var procs []*exec.Cmd
	var logs []*lockedBuf
	for i := range 2 {
		listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cfgPath := filepath.Join(dir, fmt.Sprintf("kproxy-%d.yaml", i))
		cfg := fmt.Sprintf("listen: %s\nadmin: %s\nstate_dir: %s\ninstance: { id: kproxy-%d }\ncontrol: { group: %s-members, session_timeout: 6s }\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes: { default: source }\nreplicate: [%s]\n",
			listen, admin, filepath.Join(dir, fmt.Sprintf("state-%d", i)), i, topic, env.source, env.target, topic)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd, lb := runKproxy(t, exe, cfgPath)
		admins, procs, logs = append(admins, admin), append(procs, cmd), append(logs, lb)
	}

	// each waits until every partition is copied by exactly one instance
	// and returns the partitions of each.
	each := func(what string) [][]int32 {
		t.Helper()
		var cs [][]int32
		waitFor(t, what, func() bool {
			c0, m0 := copying(admins[0], topic)
			c1, m1 := copying(admins[1], topic)
			cs = [][]int32{c0, c1}
			all := slices.Concat(c0, c1)
			slices.Sort(all)
			return m0 == 2 && m1 == 2 && len(all) == partitions && len(slices.Compact(all)) == partitions
		})
		return cs
	}
	cs := each("the partitions to be copied once each")
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
	each("the partitions to be copied once each again")

	acl, err := kgo.NewClient(kgo.SeedBrokers(env.source))
	if err != nil {
		t.Fatal(err)
	}
	defer acl.Close()
	ends, err := kadm.NewClient(acl).ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("source end offsets: %v %v", err, ends.Error())
	}
	for p := int32(0); p < partitions; p++ {
		end, _ := ends.Lookup(topic, p)
		src := readPartition(t, env.source, topic, p, int(end.Offset), false)
		if len(src) != int(end.Offset) {
			t.Fatalf("partition %d: read %d source records, its end is %d", p, len(src), end.Offset)
		}
		got := readPartition(t, env.target, topic, p, len(src), true)
		if len(got) != len(src) || !slices.Equal(got, src) {
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
