package control

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A producer that writes to the source cluster directly, around kproxy, is
// reported with its topic; topics only kproxy's clients write to are not,
// whether they write with acks=all (idempotent), acks=0 or in transactions
// that commit and abort (markers and aborted batches take offsets too). A
// topic the config names but the source lacks (ghost) does not fail the
// check.
func TestBypassReportsTheTopicADirectProducerWrites(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(3, "direct", "clean", "noack", "txn"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	inst := startYAML(t, ctx, fmt.Appendf(nil, "listen: %s\nclusters:\n  source: { bootstrap: [%s] }\nroutes:\n  default: source\n  topics:\n    ghost: source\nmonitor:\n  bypass_interval: 100ms\n",
		listen, src.ListenAddrs()[0]))
	defer inst.Close()

	through := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(listen)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	idem := through()
	noack := through(kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	txn := through(kgo.TransactionalID("bypass-test"))
	// Make every topic known to kproxy (its counters exist before the
	// first write is compared).
	if err := idem.ProduceSync(ctx, &kgo.Record{Topic: "clean", Value: []byte("first")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"direct", "noack", "txn"} {
		if err := idem.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("first")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitChecks(t, ctx, inst, 3)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	stop := make(chan struct{})
	wg.Add(3)
	go func() { // idempotent, acks=all, to clean and direct
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rs := idem.ProduceSync(ctx, &kgo.Record{Topic: "clean", Value: fmt.Append(nil, i)}, &kgo.Record{Topic: "direct", Value: fmt.Append(nil, i)})
			if err := rs.FirstErr(); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() { // acks=0
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				_ = noack.Flush(ctx)
				return
			default:
			}
			noack.Produce(ctx, &kgo.Record{Topic: "noack", Value: fmt.Append(nil, i)}, nil)
			time.Sleep(time.Millisecond)
		}
	}()
	go func() { // transactions, every third one aborted
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := txn.BeginTransaction(); err != nil {
				errs <- err
				return
			}
			for j := range 5 {
				txn.Produce(ctx, &kgo.Record{Topic: "txn", Value: fmt.Append(nil, i, j)}, nil)
			}
			commit := kgo.TryCommit
			if i%3 == 2 {
				commit = kgo.TryAbort
			}
			if err := txn.Flush(ctx); err != nil {
				errs <- err
				return
			}
			if err := txn.EndTransaction(ctx, commit); err != nil {
				errs <- err
				return
			}
		}
	}()

	// Meanwhile an application not repointed to kproxy writes 60 records
	// to the source directly.
	time.Sleep(300 * time.Millisecond)
	produceTo(t, ctx, src, "direct", 60)
	var direct BypassTopic
	for ctx.Err() == nil {
		for _, bt := range inst.Status().Bypass.Topics {
			if bt.Topic == "direct" {
				direct = bt
			}
		}
		if direct.Records > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // several more windows with kproxy's clients writing
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("producing through kproxy: %v", err)
	}
	waitChecks(t, ctx, inst, 3) // the last writes and markers are compared too

	st := inst.Status().Bypass
	if st.Error != "" {
		t.Fatalf("bypass check failed: %s", st.Error)
	}
	var got []string
	for _, bt := range st.Topics {
		got = append(got, fmt.Sprintf("%s=%d", bt.Topic, bt.Records))
		if bt.Topic == "direct" {
			direct = bt
		}
	}
	t.Logf("bypass reports %v", got)
	if len(st.Topics) != 1 || direct.Records < 1 || direct.Records > 60 {
		t.Fatalf("bypass reports %v; want only direct, with 1 to 60 records (a lower bound of the 60 written around kproxy)", got)
	}
}

// waitChecks waits until n more bypass checks have completed.
func waitChecks(t *testing.T, ctx context.Context, inst *Instance, n int) {
	t.Helper()
	for range n {
		last := inst.Status().Bypass.Checked
		for ctx.Err() == nil && !inst.Status().Bypass.Checked.After(last) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("bypass checks did not run")
	}
}

// With several instances each sees only its own clients' produces, which
// are all the produces through kproxy to the partitions it leads: a
// partition another instance leads grows by records this one never saw,
// and that is not a bypass. Only a producer writing to the source directly
// is reported. Before, every instance reported the others' clients' writes.
func TestBypassWithSeveralInstancesReportsOnlyDirectWrites(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(4, "clean", "direct"))
	ctl := newKfake(t, kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var insts []*Instance
	var addrs []string
	for i := range 2 {
		listen, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		inst := startYAML(t, ctx, fmt.Appendf(nil, "listen: %s\ninstance: { id: kp-%d }\ncontrol: { cluster: target, session_timeout: 2s }\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\nmonitor:\n  bypass_interval: 100ms\n",
			listen, i, src.ListenAddrs()[0], ctl.ListenAddrs()[0]))
		defer inst.Close()
		insts, addrs = append(insts, inst), append(addrs, listen)
	}
	for formed := false; !formed; time.Sleep(20 * time.Millisecond) {
		formed = true
		for _, inst := range insts {
			st := inst.insts.status()
			formed = formed && st.Formed && len(st.Members) == 2
		}
		if ctx.Err() != nil {
			t.Fatal("the instances never agreed on a view")
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	write := func(topic string, i int) {
		t.Helper()
		var rs []*kgo.Record
		for p := range int32(4) {
			rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Append(nil, i)})
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	write("clean", -1)
	write("direct", -1)
	for _, inst := range insts {
		waitChecks(t, ctx, inst, 3)
	}
	for i := 0; i < 200; i++ { // several windows of kproxy's clients writing
		write("clean", i)
		if i == 100 {
			produceTo(t, ctx, src, "direct", 60)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, inst := range insts {
		waitChecks(t, ctx, inst, 3)
	}
	direct := int64(0)
	for i, inst := range insts {
		st := inst.Status().Bypass
		if st.Error != "" {
			t.Fatalf("instance %d: bypass check failed: %s", i, st.Error)
		}
		for _, bt := range st.Topics {
			if bt.Topic != "direct" {
				t.Fatalf("instance %d reports %s=%d: records its peer's clients wrote through kproxy", i, bt.Topic, bt.Records)
			}
			direct += bt.Records
		}
	}
	if direct < 1 || direct > 60 {
		t.Fatalf("the instances report %d records written around kproxy, want 1 to 60", direct)
	}
}
