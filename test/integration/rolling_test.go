package integration

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/checker"
	"github.com/kproxy/kproxy/test/hatest"
)

// Issue 14, a rolling restart under load: three `kproxy run` processes
// serve one virtual cluster (membership on the target, the control
// cluster) and copy a replicated topic to the target, each the partitions
// it leads, while an idempotent franz-go producer writes it through them
// at a steady rate and two consumer groups read it, franz-go's and
// librdkafka's, all bootstrapped from the three. The instances are
// restarted one at a time as a StatefulSet rolls (highest ordinal first):
// SIGTERM, wait for the exit, start again with the same instance.id,
// addresses and state_dir, wait until every instance lists all three
// brokers with the leaders and coordinator of before, then the next.
// Afterwards the checker finds nothing lost, duplicated or reordered
// between what was acknowledged and what each group read, and the target
// holds every source record once, in order. How long each restart held a
// partition's acknowledgements up, and how many times the groups
// rebalanced, is logged, not asserted.
//
// librdkafka's group failed here before kproxy answered NOT_LEADER_OR_FOLLOWER
// with an empty record set: it read a null one as a malformed answer and
// fetched a moved partition from its old instance until the end.
// A librdkafka idempotent producer writes a second topic (not copied) at
// 100 records/s through the restarts: librdkafka pipelines up to 5 batches
// per partition and sends them to a partition's new instance without
// waiting for the old one's answers, so a later batch can reach the new
// owner first. It lost a record that way before producer sessions were
// shared between instances (docs/ha.md, "Producer sessions move with the
// partition"): the new owner's fresh upstream session took the later
// batch. Now every acknowledged record must be in the source log once, in
// order, with none the producer was not told about.
func TestRollingRestartOfThreeInstancesUnderLoad(t *testing.T) {
	const partitions = 6
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topic := spreadTopic("roll", partitions, 3) // every restart moves partitions
	group := topic + "-g"
	createTopic(t, env.source, topic, partitions)
	rdkTopic := spreadTopic("roll-rdk", partitions, 3)
	createTopic(t, env.source, rdkTopic, partitions)
	in := startInstances(t, 3, topic, fmt.Sprintf("routes: { default: source }\nreplicate: [%s]\n", topic))
	before, err := hatest.Agreed(ctx, in.addrs, 3, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	in.copiedOnceEach("the partitions to be copied once each", topic, partitions)

	tr, err := hatest.NewTraffic(in.addrs, topic, partitions, group)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Produce(ctx, 10)
	if err := tr.Settle(ctx); err != nil { // the group has joined and read
		t.Fatal(err)
	}
	gen := tr.Generation()

	// librdkafka's group reads along until it has read everything, then
	// is stopped (SIGINT: it commits and leaves).
	rdkOut, rdkErr := &lockedBuf{}, &lockedBuf{}
	rdk := exec.Command(bin("test/clients/bin/rdk"), "consume", "--bootstrap", strings.Join(in.addrs, ","), "--topic", topic, "--group", topic+"-rdk",
		"--count", fmt.Sprint(math.MaxInt32), "--timeout", "300")
	rdk.Stdout, rdk.Stderr = rdkOut, rdkErr
	if err := rdk.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rdk.Process.Kill(); _ = rdk.Wait() }()

	// librdkafka's idempotent producer: 100 records/s for about as long
	// as the restarts take (its count is fixed: an interrupted rdk
	// reports its unsent records as failed).
	const rdkRate, rdkCount = 100, 2500
	rdkProdOut, rdkProdErr := &lockedBuf{}, &lockedBuf{}
	rdkArgs := []string{"produce", "--bootstrap", strings.Join(in.addrs, ","), "--topic", rdkTopic,
		"--count", fmt.Sprint(rdkCount), "--rate", fmt.Sprint(rdkRate), "--idempotent", "--run", "1", "--timeout", "90"}
	// KPROXY_ROLL_RDK_LOG=file keeps the producer's librdkafka debug log
	// (msg, eos, protocol: every produce request and answer) in file.
	debugLog := os.Getenv("KPROXY_ROLL_RDK_LOG")
	if debugLog != "" {
		rdkArgs = append(rdkArgs, "-v")
	}
	rdkProd := exec.Command(bin("test/clients/bin/rdk"), rdkArgs...)
	rdkProd.Stdout, rdkProd.Stderr = rdkProdOut, rdkProdErr
	if err := rdkProd.Start(); err != nil {
		t.Fatal(err)
	}
	rdkProdDone := make(chan error, 1)
	go func() { rdkProdDone <- rdkProd.Wait() }()
	defer func() { _ = rdkProd.Process.Kill(); <-rdkProdDone }()

	// 50 records/s to each partition, and the franz-go group reading
	// them, until the last restart is over.
	load, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tr.ProduceEvery(ctx, load, 20*time.Millisecond)
	}()
	go func() {
		defer wg.Done()
		_ = tr.Consume(load, math.MaxInt) // ends with the load
	}()
	const between = 3 * time.Second // load on the whole cluster between restarts
	time.Sleep(between)

	type restart struct {
		i                  int
		term, exited, back time.Time
	}
	var restarts []restart
	for i := 2; i >= 0; i-- {
		r := restart{i: i, term: time.Now()}
		in.stop(i, syscall.SIGTERM)
		r.exited = time.Now()
		in.start(i)
		if err := hatest.AgreedAsBefore(ctx, in.addrs, before, topic, group); err != nil {
			t.Fatalf("after restarting instance %d: %v", i, err)
		}
		r.back = time.Now()
		restarts = append(restarts, r)
		time.Sleep(between)
	}
	stopLoad()
	wg.Wait()
	if err := tr.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	rebalances := tr.Generation() - gen
	verdict, err := tr.Check()
	for _, r := range restarts {
		gap, p := tr.AckGap(r.term, r.back.Add(between))
		t.Logf("instance %d: stopped %s after SIGTERM, all three agreed again %s after the restart; longest a partition went without an ack: %s (partition %d)",
			r.i, r.exited.Sub(r.term).Round(time.Millisecond), r.back.Sub(r.exited).Round(time.Millisecond), gap.Round(time.Millisecond), p)
	}
	t.Logf("franz-go group: %d rebalances during the rolling restart; %d records produced", rebalances, tr.Produced())
	if err != nil {
		t.Fatal(err)
	}
	t.Log("franz-go: ", verdict)

	acks := tr.Acks()
	// A minute at most: a group stuck on a partition shows as lost
	// records below.
	poll(time.Minute, 200*time.Millisecond, func() bool { return strings.Count(rdkOut.String(), `"ev":"consume"`) >= len(acks) })
	_ = rdk.Process.Signal(syscall.SIGINT)
	_ = rdk.Wait()
	rl := parse(t, "rdk group", []byte(rdkOut.String()))
	rep := checker.Check(acks, rl.Consumed, checker.Options{ExpectAll: true, RequireAcked: true})
	t.Logf("librdkafka: %s; %d rebalance events (assigned or revoked, the first assignment and the stop included)", rep, rl.Rebalances)
	if !rep.OK() {
		t.Fatalf("librdkafka: %s\n%s\nits log:\n%s", rep, rep.Details(), tail(rdkErr.String(), 4000))
	}

	select {
	case err := <-rdkProdDone:
		rdkProdDone <- err // for the deferred wait
		if err != nil {
			t.Errorf("librdkafka producer: %v\nits log:\n%s", err, tail(rdkProdErr.String(), 4000))
		}
	case <-ctx.Done():
		t.Fatal("the librdkafka producer did not finish")
	}
	if debugLog != "" {
		if err := os.WriteFile(debugLog, []byte(rdkProdErr.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	rdkIdempotentHoldsItsAcks(t, rdkTopic, partitions, parse(t, "rdk producer", []byte(rdkProdOut.String())).Acks, rdkProdErr.String())

	in.copiedOnceEach("the partitions to be copied once each after the restarts", topic, partitions)
	targetHoldsSource(ctx, t, topic, partitions)
}

// rdkIdempotentHoldsItsAcks checks an idempotent producer's topic on the
// source: each partition holds exactly the records acknowledged to it, at
// their acknowledged offsets, in the order they were produced (rdk's value
// rdkafka-<run>-<i>, i increasing).
func rdkIdempotentHoldsItsAcks(t *testing.T, topic string, partitions int32, acks []checker.Ack, log string) {
	t.Helper()
	want := map[int32][]string{}
	slices.SortFunc(acks, func(a, b checker.Ack) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	ends := map[int32]int{}
	for p := range partitions {
		ends[p] = 0
	}
	for _, a := range acks {
		want[a.Partition] = append(want[a.Partition], a.Value)
		if int(a.Offset) != len(want[a.Partition])-1 {
			t.Fatalf("librdkafka producer: %s acknowledged at partition %d offset %d, want offset %d (each partition holds only its records)\nits log:\n%s",
				a.Value, a.Partition, a.Offset, len(want[a.Partition])-1, tail(log, 4000))
		}
		ends[a.Partition] = len(want[a.Partition])
	}
	got := readPartitions(t, env.source, topic, ends, false)
	n := 0
	for p := range partitions {
		if !slices.Equal(got[p], want[p]) {
			t.Fatalf("librdkafka producer: partition %d holds %d records, %d acknowledged; they differ (lost, duplicated or reordered)\nits log:\n%s", p, len(got[p]), len(want[p]), tail(log, 4000))
		}
		last := -1
		for _, v := range got[p] {
			i, err := strconv.Atoi(v[strings.LastIndexByte(v, '-')+1:])
			if err != nil || i <= last {
				t.Fatalf("librdkafka producer: partition %d holds %s after record %d (out of order)", p, v, last)
			}
			last = i
		}
		n += len(got[p])
	}
	t.Logf("librdkafka idempotent producer: %d records acknowledged, each once and in order in the source log", n)
}
