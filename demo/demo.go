// Package demo tells kproxy's whole story on two embedded (kfake) clusters:
// live traffic through a kproxy instance, a flip to the target and a
// rollback under load, a drain and a verdict. It links kfake and
// test/checker, so only cmd/kproxy-demo imports it; the serving binary
// (cmd/kproxy) does not.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
	"github.com/kproxy/kproxy/routing"
	"github.com/kproxy/kproxy/test/checker"
)

// The demo's fixed cast.
const (
	demoTopic      = "orders"
	demoPartitions = 6
	demoGroup      = "kproxy-demo"
	demoProducers  = 2
	demoMembers    = 2
)

// Options tune one demo run. The command uses the defaults; tests shorten
// the traffic phase.
type Options struct {
	// Duration is how long the producers run.
	Duration time.Duration
	// Rate is records per second, all producers together.
	Rate int
	// DrainTimeout bounds the wait, after the producers stop, for the
	// consumers to read every acked record.
	DrainTimeout time.Duration
	// Out receives the story and the verdict block.
	Out io.Writer
	// Log receives kproxy's own logs (quiet: warn and above).
	Log hclog.Logger
}

func (o *Options) fill() {
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 2000
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 15 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
}

// Result is what a run found.
type Result struct {
	Report        checker.Report
	ProduceErrors int
	ConsumeErrors int
	// Reloads counts configs kproxy applied while traffic was flowing.
	Reloads int
	// Flips are the cutovers of the demo topic, in order ("target",
	// "source" for the flip back).
	Flips []string
	// HoldMillis is the longest time a flip held the topic's produce
	// requests.
	HoldMillis int64
	// OnTarget and OnSource count records (end offsets) each cluster holds
	// after the run.
	OnTarget, OnSource int64
	// RebalancesAfterFlip counts group rebalance events from the flip on.
	RebalancesAfterFlip int64
	// Problems are reasons for FAIL beyond the checker's anomalies.
	Problems []string
}

// Pass is the verdict.
func (r Result) Pass() bool {
	return r.Report.OK() && r.ProduceErrors == 0 && r.ConsumeErrors == 0 && len(r.Problems) == 0
}

// Run tells the whole story: embedded clusters, kproxy in front of them,
// live traffic through kproxy with events applied to it mid-run, a drain and
// a verdict. It returns an error only when the demo could not run; a run that
// found anomalies returns a result whose Pass is false.
func Run(ctx context.Context, opts Options) (Result, error) {
	opts.fill()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := &demo{opts: opts, begin: time.Now(), hist: newDemoHistory()}
	defer d.close()

	if err := d.startClusters(); err != nil {
		return Result{}, err
	}
	if err := d.startKproxy(ctx); err != nil {
		return Result{}, err
	}
	if err := d.startConsumers(ctx); err != nil {
		return Result{}, err
	}
	if err := d.runTraffic(ctx); err != nil {
		return Result{}, err
	}
	d.drain(ctx)
	d.stopConsumers()
	d.checkCommits(ctx)
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	res := d.verdict()
	d.printVerdict(res)
	return res, nil
}

// demoEvent is something done to kproxy while traffic flows through it.
type demoEvent struct {
	// at is when, as a fraction of the traffic phase.
	at   float64
	name string
	run  func(d *demo, ctx context.Context) error
}

// demoEvents is the mid-run script: the topic is replicated from the
// start; at 40% of the traffic the operator's one-line edit flips it to the
// target while producers and consumers keep running, and at 75% the edit is
// undone: the rollback flips it back to the source (which the copy back kept
// complete).
func demoEvents() []demoEvent {
	return []demoEvent{
		{at: 0.4, name: "cutover", run: func(d *demo, ctx context.Context) error { return d.flipUnderLoad(ctx, config.Target) }},
		{at: 0.75, name: "rollback", run: func(d *demo, ctx context.Context) error { return d.flipUnderLoad(ctx, config.Source) }},
	}
}

// demo is one run's state.
type demo struct {
	opts  Options
	begin time.Time
	hist  *demoHistory

	source, target *kfake.Cluster

	dir      string            // temp dir holding the config file
	cfgPath  string            // the config file kproxy was started from
	cfgFile  demoConfig        // what cfgPath holds now
	inst     *control.Instance // the running kproxy
	reloader *config.Reloader
	addr     string // kproxy's Kafka listener

	consumers []*demoConsumer
	consumeWG sync.WaitGroup
	stopPoll  context.CancelFunc

	producers []*demoProducer

	reloads     int
	flips       []string
	holdMillis  int64
	epochAtFlip int64 // consumers' rebalance events when the flip started
	epochAtEnd  int64 // and when traffic ended, before the group is left
	problems    []string
}

// say prints one line of the story, stamped with the time since start.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.opts.Out, "[%5.1fs] %s\n", time.Since(d.begin).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.problems = append(d.problems, msg)
	d.say("PROBLEM: %s", msg)
}

// Step 1: two embedded clusters.
func (d *demo) startClusters() error {
	var err error
	d.source, err = kfake.NewCluster(kfake.ClusterID("demo-source"), kfake.NumBrokers(3),
		kfake.SeedTopics(demoPartitions, demoTopic))
	if err != nil {
		return fmt.Errorf("source cluster: %w", err)
	}
	d.target, err = kfake.NewCluster(kfake.ClusterID("demo-target"), kfake.NumBrokers(1))
	if err != nil {
		return fmt.Errorf("target cluster: %w", err)
	}
	d.say("embedded clusters up: source (3 brokers, topic %s with %d partitions) %s, target (1 broker) %s",
		demoTopic, demoPartitions, strings.Join(d.source.ListenAddrs(), ","), strings.Join(d.target.ListenAddrs(), ","))
	return nil
}

// demoConfig is the part of a kproxy config file the demo varies.
type demoConfig struct {
	Listen, Admin  string
	StateDir       string
	Source, Target []string
	Replicate      []string
	// Topics maps topic names to a route (source or target), for a flip.
	Topics map[string]config.Cluster
}

func (c demoConfig) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by kproxy demo\n")
	fmt.Fprintf(&b, "listen: %s\nadvertise: %s\nadmin: %s\ncluster_id: kproxy-demo\nstate_dir: %s\n", c.Listen, c.Listen, c.Admin, c.StateDir)
	fmt.Fprintf(&b, "clusters:\n  source:\n    bootstrap: [%s]\n  target:\n    bootstrap: [%s]\n",
		strings.Join(c.Source, ", "), strings.Join(c.Target, ", "))
	fmt.Fprintf(&b, "routes:\n  default: source\n")
	if len(c.Topics) > 0 {
		b.WriteString("  topics:\n")
		for _, t := range slices.Sorted(maps.Keys(c.Topics)) {
			fmt.Fprintf(&b, "    %s: %s\n", t, c.Topics[t])
		}
	}
	if len(c.Replicate) > 0 {
		fmt.Fprintf(&b, "replicate: [%s]\n", strings.Join(c.Replicate, ", "))
	}
	b.WriteString("log:\n  level: warn\n")
	return b.String()
}

// writeConfig replaces the config file the way an editor would: a new file
// renamed over the old one.
func (d *demo) writeConfig(c demoConfig) error {
	tmp := d.cfgPath + ".new"
	if err := os.WriteFile(tmp, []byte(c.yaml()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, d.cfgPath); err != nil {
		return err
	}
	d.cfgFile = c
	return nil
}

// freeAddr returns a loopback address nobody listens on right now. The
// config needs real ports (advertise must be what clients can dial).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Step 2: kproxy, started from a config file like any deployment.
func (d *demo) startKproxy(ctx context.Context) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "kproxy-demo-"); err != nil {
		return err
	}
	d.cfgPath = filepath.Join(d.dir, "kproxy.yaml")
	for attempt := 1; ; attempt++ {
		err = d.tryStartKproxy(ctx)
		if err == nil || attempt == 3 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("starting kproxy: %w", err)
	}
	d.addr = d.inst.Addr().String()
	d.reloader = config.NewReloader(d.cfgPath, d.inst.Config(), d.opts.Log.Named("config"), d.inst.Apply)
	d.say("kproxy up: kafka on %s, admin on http://%s, config %s", d.addr, d.cfgFile.Admin, d.cfgPath)
	return nil
}

func (d *demo) tryStartKproxy(ctx context.Context) error {
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	admin, err := freeAddr()
	if err != nil {
		return err
	}
	c := demoConfig{Listen: listen, Admin: admin, StateDir: filepath.Join(filepath.Dir(d.cfgPath), "state"), Source: d.source.ListenAddrs(), Target: d.target.ListenAddrs(), Replicate: []string{demoTopic}}
	if err := d.writeConfig(c); err != nil {
		return err
	}
	cfg, err := config.Load(d.cfgPath)
	if err != nil {
		return fmt.Errorf("%s: %w", d.cfgPath, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	inst, err := control.Start(sctx, cfg, d.opts.Log)
	if err != nil {
		return err
	}
	d.inst = inst
	return nil
}

// demoClient are options every demo client shares: it knows only kproxy.
func (d *demo) demoClient(id string, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(d.addr),
		kgo.ClientID(id),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelError, func() string { return id + ": " })),
	}
	return kgo.NewClient(append(base, opts...)...)
}

// Step 3a: the consumer group, reading orders from the start.
type demoConsumer struct {
	name     string
	cl       *kgo.Client
	epoch    atomic.Int64 // rebalance events seen, for the checker's ordering rule
	assigned atomic.Int64 // partitions currently owned
}

func (d *demo) startConsumers(ctx context.Context) error {
	pollCtx, stop := context.WithCancel(ctx)
	d.stopPoll = stop
	for i := 1; i <= demoMembers; i++ {
		c := &demoConsumer{name: fmt.Sprintf("demo-consumer-%d", i)}
		cl, err := d.demoClient(c.name,
			kgo.ConsumerGroup(demoGroup),
			kgo.ConsumeTopics(demoTopic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxWait(250*time.Millisecond),
			// Records are recorded, then marked, then committed; a rebalance
			// waits for the poll loop so a revoked partition's progress is
			// committed before another member takes it over.
			kgo.BlockRebalanceOnPoll(),
			kgo.AutoCommitMarks(),
			kgo.AutoCommitInterval(time.Second),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				c.epoch.Add(1)
				c.assigned.Add(int64(len(m[demoTopic])))
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
				c.epoch.Add(1)
				c.assigned.Add(-int64(len(m[demoTopic])))
				if err := cl.CommitMarkedOffsets(ctx); err != nil && ctx.Err() == nil {
					d.hist.consumeError(fmt.Sprintf("%s: commit on revoke: %v", c.name, err))
				}
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				c.epoch.Add(1)
				c.assigned.Add(-int64(len(m[demoTopic])))
			}),
		)
		if err != nil {
			return err
		}
		c.cl = cl
		d.consumers = append(d.consumers, c)
		d.consumeWG.Add(1)
		go func() {
			defer d.consumeWG.Done()
			c.poll(pollCtx, d.hist)
		}()
	}
	// Let the group settle before traffic starts, so the story's rebalance
	// (both members joining) is over and every partition has an owner.
	deadline := time.Now().Add(20 * time.Second)
	for {
		total, each := int64(0), true
		for _, c := range d.consumers {
			n := c.assigned.Load()
			total += n
			each = each && n > 0
		}
		if total == demoPartitions && each {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer group %s did not settle: %d of %d partitions assigned", demoGroup, total, demoPartitions)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	var parts []string
	for _, c := range d.consumers {
		parts = append(parts, fmt.Sprintf("%s owns %d", c.name, c.assigned.Load()))
	}
	d.say("consumer group %s joined through kproxy: %s", demoGroup, strings.Join(parts, ", "))
	return nil
}

func (c *demoConsumer) poll(ctx context.Context, h *demoHistory) {
	for ctx.Err() == nil {
		fs := c.cl.PollRecords(ctx, 1000)
		for _, e := range fs.Errors() {
			if ctx.Err() != nil || errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, kgo.ErrClientClosed) {
				continue
			}
			h.consumeError(fmt.Sprintf("%s: fetch %s[%d]: %v", c.name, e.Topic, e.Partition, e.Err))
		}
		epoch := int(c.epoch.Load())
		var recs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			h.consumed(checker.Consumed{
				Client: "franz-go", Consumer: c.name, Topic: r.Topic, Partition: r.Partition,
				Offset: r.Offset, Key: string(r.Key), Value: string(r.Value), Epoch: epoch,
			})
			recs = append(recs, r)
		})
		c.cl.MarkCommitRecords(recs...)
		c.cl.AllowRebalance()
	}
}

// Step 3b: two producers, one idempotent (franz-go's default) and one not,
// both acks=all, keyed records at a steady rate.
type demoProducer struct {
	name string
	cl   *kgo.Client
	sent int
	done chan struct{}
}

func (d *demo) startProducers(ctx context.Context, stop <-chan struct{}) error {
	perProducer := float64(d.opts.Rate) / demoProducers
	for i := 1; i <= demoProducers; i++ {
		p := &demoProducer{name: fmt.Sprintf("demo-producer-%d", i), done: make(chan struct{})}
		opts := []kgo.Opt{
			kgo.DefaultProduceTopic(demoTopic),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerLinger(5 * time.Millisecond),
			kgo.RecordDeliveryTimeout(20 * time.Second),
		}
		kind := "idempotent"
		if i == 2 {
			opts = append(opts, kgo.DisableIdempotentWrite())
			kind = "non-idempotent"
		}
		cl, err := d.demoClient(p.name, opts...)
		if err != nil {
			return err
		}
		p.cl = cl
		d.producers = append(d.producers, p)
		go func() {
			defer close(p.done)
			p.run(ctx, stop, perProducer, d.hist)
		}()
		d.say("%s (%s, acks=all) producing %.0f records/s to %s through kproxy", p.name, kind, perProducer, demoTopic)
	}
	return nil
}

func (p *demoProducer) run(ctx context.Context, stop <-chan struct{}, rate float64, h *demoHistory) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	begin := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		want := int(time.Since(begin).Seconds() * rate)
		for ; p.sent < want; p.sent++ {
			r := &kgo.Record{
				Key:   fmt.Appendf(nil, "customer-%03d", p.sent%97),
				Value: fmt.Appendf(nil, "%s-%07d", p.name, p.sent),
			}
			p.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
				if err != nil {
					h.produceError(fmt.Sprintf("%s: %s: %v", p.name, r.Value, err))
					return
				}
				h.acked(checker.Ack{
					Client: p.name, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
					Key: string(r.Key), Value: string(r.Value),
				})
			})
		}
	}
}

// Step 3: traffic through kproxy, with the mid-run events.
func (d *demo) runTraffic(ctx context.Context) error {
	stop := make(chan struct{})
	begin := time.Now()
	if err := d.startProducers(ctx, stop); err != nil {
		close(stop)
		return err
	}
	events := demoEvents()
	slices.SortStableFunc(events, func(a, b demoEvent) int {
		switch {
		case a.at < b.at:
			return -1
		case a.at > b.at:
			return 1
		}
		return 0
	})
	wait := func(until time.Time) error {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
	for _, ev := range events {
		if err := wait(begin.Add(time.Duration(ev.at * float64(d.opts.Duration)))); err != nil {
			close(stop)
			return err
		}
		acked, consumed := d.hist.progress()
		d.say("%s under load (acked %d, consumed %d so far)", ev.name, acked, consumed)
		if err := ev.run(d, ctx); err != nil {
			d.problem("%s: %v", ev.name, err)
		}
	}
	err := wait(begin.Add(d.opts.Duration))
	close(stop)
	d.stopProducers()
	return err
}

// Mid-run event: a config reload that routes the demo topic to cluster
// `to`. It goes through the same path as an edited file under `kproxy run`:
// the file is replaced, re-read, validated and handed to the instance's
// Apply, which starts the cutover; this waits until it flipped.
func (d *demo) flipUnderLoad(ctx context.Context, to config.Cluster) error {
	if len(d.flips) == 0 {
		d.epochAtFlip = d.rebalanceEvents()
	}
	var flippedBefore time.Time
	for _, st := range d.inst.Cutovers() {
		if st.Topic == demoTopic {
			flippedBefore = st.FlippedAt
		}
	}
	next := d.cfgFile
	next.Topics = map[string]config.Cluster{demoTopic: to}
	if err := d.writeConfig(next); err != nil {
		return err
	}
	before := d.inst.Generation()
	if err := d.reloader.Reload(); err != nil {
		return err
	}
	if d.inst.Generation() != before+1 {
		why := "not applied"
		if e := d.inst.LastReloadError(); e != "" {
			why = e
		}
		return fmt.Errorf("kproxy did not apply the reload: %s", why)
	}
	d.reloads++
	d.say("config generation %d applied: %s: %s (cutover started)", d.inst.Generation(), demoTopic, to)
	deadline := time.Now().Add(d.cfg().Cutover.MaxHold + 5*time.Second)
	for time.Now().Before(deadline) {
		for _, st := range d.inst.Cutovers() {
			if st.Topic != demoTopic {
				continue
			}
			switch {
			case st.State == routing.Flipped.String() && st.Home == string(to) && st.FlippedAt.After(flippedBefore):
				d.flips = append(d.flips, string(to))
				d.holdMillis = max(d.holdMillis, st.HoldMillis)
				d.say("cutover of %s flipped to the %s: produce held %d ms (%d requests)", demoTopic, to, st.HoldMillis, st.Held)
				return nil
			case st.State == routing.Aborted.String() || st.State == control.StateRefused:
				return fmt.Errorf("cutover of %s to the %s %s: %s", demoTopic, to, st.State, st.Reason)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("cutover of %s did not finish", demoTopic)
}

func (d *demo) cfg() *config.Config { return d.inst.Config() }

func (d *demo) stopProducers() {
	for _, p := range d.producers {
		<-p.done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	for _, p := range d.producers {
		if err := p.cl.Flush(ctx); err != nil {
			d.problem("%s: flush: %v", p.name, err)
		}
	}
	sent := 0
	for _, p := range d.producers {
		sent += p.sent
		p.cl.Close()
	}
	d.producers = nil
	acked, _ := d.hist.progress()
	d.say("producers stopped: %d records sent, %d acked", sent, acked)
}

// Step 4: wait until the group has read every acked record.
func (d *demo) drain(ctx context.Context) {
	deadline := time.Now().Add(d.opts.DrainTimeout)
	for {
		missing := d.hist.missing()
		if missing == 0 {
			_, consumed := d.hist.progress()
			d.say("consumers drained: every acked record read (%d consume events)", consumed)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.say("consumers gave up draining after %s: %d acked records never read", d.opts.DrainTimeout, missing)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *demo) stopConsumers() {
	if d.stopPoll == nil {
		return
	}
	d.stopPoll()
	d.consumeWG.Wait()
	// Rebalance events up to here; leaving the group below adds more.
	d.epochAtEnd = d.rebalanceEvents()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range d.consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.cl.CommitMarkedOffsets(ctx); err != nil {
				d.hist.consumeError(fmt.Sprintf("%s: final commit: %v", c.name, err))
			}
			c.cl.Close() // leaves the group
		}()
	}
	wg.Wait()
	d.consumers = nil
	d.stopPoll = nil
}

// checkCommits asks kproxy for the group's committed offsets: after the final
// commit, each partition's must be one past the last record the group read,
// so a restarted consumer would neither skip nor re-read anything.
func (d *demo) checkCommits(ctx context.Context) {
	_, consumed, _, _, _ := d.hist.snapshot()
	want := map[int32]int64{}
	for _, c := range consumed {
		want[c.Partition] = max(want[c.Partition], c.Offset+1)
	}
	cl, err := d.demoClient("demo-offset-check")
	if err != nil {
		d.problem("committed offsets: %v", err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = demoGroup
	t := kmsg.NewOffsetFetchRequestGroupTopic()
	t.Topic = demoTopic
	for p := range int32(demoPartitions) {
		t.Partitions = append(t.Partitions, p)
	}
	g.Topics = append(g.Topics, t)
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Groups = append(req.Groups, g)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		d.problem("committed offsets: OffsetFetch: %v", err)
		return
	}
	if len(resp.Groups) != 1 {
		d.problem("committed offsets: OffsetFetch answered %d groups, want 1", len(resp.Groups))
		return
	}
	rg := resp.Groups[0]
	if err := kerr.ErrorForCode(rg.ErrorCode); err != nil {
		d.problem("committed offsets: OffsetFetch: %v", err)
		return
	}
	got := map[int32]int64{}
	for _, rt := range rg.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				d.problem("committed offsets: %s[%d]: %v", rt.Topic, rp.Partition, err)
				continue
			}
			got[rp.Partition] = rp.Offset
		}
	}
	ok := 0
	for p := range int32(demoPartitions) {
		w, seen := want[p]
		if !seen {
			w = -1 // nothing read, nothing committed
		}
		if g, have := got[p]; !have || g != w {
			d.problem("committed offsets: %s[%d] committed %d, want %d (one past the last record read)", demoTopic, p, got[p], w)
			continue
		}
		ok++
	}
	if ok == demoPartitions {
		d.say("group %s committed offsets at the end of all %d partitions", demoGroup, demoPartitions)
	}
}

// Step 5: the verdict.
func (d *demo) verdict() Result {
	acks, consumed, perr, cerr, samples := d.hist.snapshot()
	res := Result{
		Report:              checker.Check(acks, consumed, checker.Options{ExpectAll: true}),
		ProduceErrors:       perr,
		ConsumeErrors:       cerr,
		Reloads:             d.reloads,
		Flips:               d.flips,
		HoldMillis:          d.holdMillis,
		OnTarget:            d.endOffsets(d.target),
		OnSource:            d.endOffsets(d.source),
		RebalancesAfterFlip: d.epochAtEnd - d.epochAtFlip,
		Problems:            d.problems,
	}
	res.Problems = append(slices.Clip(res.Problems), samples...)
	if len(res.Flips) > 0 && res.RebalancesAfterFlip > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d consumer group rebalance events after the flip (want 0)", res.RebalancesAfterFlip))
	}
	return res
}

func (d *demo) printVerdict(res Result) {
	w := d.opts.Out
	c := res.Report.Counts
	fmt.Fprintf(w, "\nkproxy demo: %d producers, 1 consumer group (%d members), topic %s (%d partitions) on embedded clusters\n",
		demoProducers, demoMembers, demoTopic, demoPartitions)
	line := func(name string, v any) { fmt.Fprintf(w, "  %-19s %v\n", name, v) }
	line("records acked", c.Acked)
	line("records consumed", c.Consumed)
	line("lost", c.Lost)
	line("duplicated", c.Duplicated())
	line("out of order", c.OutOfOrder)
	line("gaps", c.Gaps)
	if c.Inconsistent+c.Mismatched+c.Moved > 0 {
		line("inconsistent", c.Inconsistent)
		line("mismatched", c.Mismatched)
		line("moved", c.Moved)
	}
	line("produce errors", res.ProduceErrors)
	line("consume errors", res.ConsumeErrors)
	line("config reloads", fmt.Sprintf("%d (applied under load)", res.Reloads))
	line("flips", fmt.Sprintf("%d (to the %s), longest produce hold %d ms", len(res.Flips), strings.Join(res.Flips, ", then the "), res.HoldMillis))
	line("end offsets", fmt.Sprintf("source %d, target %d", res.OnSource, res.OnTarget))
	line("rebalances in flips", res.RebalancesAfterFlip)
	if res.Pass() {
		fmt.Fprintln(w, "verdict: PASS")
		return
	}
	fmt.Fprintln(w, "verdict: FAIL")
	if !res.Report.OK() {
		fmt.Fprint(w, res.Report.Details())
	}
	for _, p := range res.Problems {
		fmt.Fprintf(w, "  ! %s\n", p)
	}
}

func (d *demo) close() {
	d.stopConsumers()
	for _, p := range d.producers {
		p.cl.Close()
	}
	if d.inst != nil {
		d.inst.Close()
	}
	if d.source != nil {
		d.source.Close()
	}
	if d.target != nil {
		d.target.Close()
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

// demoHistory records every ack and every consumed record.
type demoHistory struct {
	mu       sync.Mutex
	acks     []checker.Ack
	consumes []checker.Consumed
	ackedAt  map[demoPos]bool
	readAt   map[demoPos]bool
	perr     int
	cerr     int
	samples  []string
}

type demoPos struct {
	partition int32
	offset    int64
}

func newDemoHistory() *demoHistory {
	return &demoHistory{ackedAt: map[demoPos]bool{}, readAt: map[demoPos]bool{}}
}

func (h *demoHistory) acked(a checker.Ack) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.acks = append(h.acks, a)
	h.ackedAt[demoPos{a.Partition, a.Offset}] = true
}

func (h *demoHistory) consumed(c checker.Consumed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.consumes = append(h.consumes, c)
	h.readAt[demoPos{c.Partition, c.Offset}] = true
}

const demoMaxSamples = 5

func (h *demoHistory) produceError(msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.perr++
	if len(h.samples) < demoMaxSamples {
		h.samples = append(h.samples, "produce error: "+msg)
	}
}

func (h *demoHistory) consumeError(msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cerr++
	if len(h.samples) < demoMaxSamples {
		h.samples = append(h.samples, "consume error: "+msg)
	}
}

func (h *demoHistory) progress() (acked, consumed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.acks), len(h.consumes)
}

// missing counts acked positions nobody has read yet.
func (h *demoHistory) missing() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for p := range h.ackedAt {
		if !h.readAt[p] {
			n++
		}
	}
	return n
}

func (h *demoHistory) snapshot() ([]checker.Ack, []checker.Consumed, int, int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.acks), slices.Clone(h.consumes), h.perr, h.cerr, slices.Clone(h.samples)
}

// onTarget counts the records the target cluster holds for the demo topic
// (copied before the flip plus produced after it).
// endOffsets sums the demo topic's end offsets on one cluster.
func (d *demo) endOffsets(c *kfake.Cluster) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		return -1
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, demoTopic)
	if err != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// rebalanceEvents sums the consumers' rebalance events so far.
func (d *demo) rebalanceEvents() int64 {
	var n int64
	for _, c := range d.consumers {
		n += c.epoch.Load()
	}
	return n
}
