package control

// The production side of the cutover controller's ports (cutover.go):
// end offsets through the shared admin clients, the two-way replication,
// and markers as files in state_dir/cutover.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/replicator"
	"github.com/kproxy/kproxy/statefile"
)

// adminOffsets lists end offsets with the controllers' admin clients.
// Clusters are restart-only settings: the config given at start-up names
// them for good.
type adminOffsets struct {
	admins  *clusterAdmins
	cfg     *config.Config
	leaders *endLeaders
	// freeze holds the drain's own connections to the leaders
	// (freeze.go); nil: the drain looks the ends up one after the other.
	freeze *freezeConns
}

// endLeaders are partition leaders learned ahead of a cutover (Warm): a
// lookup in the hold then asks each leader once for its partitions' ends,
// one round trip, instead of a metadata request first and then the
// lookup. A leader that moved fails the quick lookup, which falls back to
// the full one.
type endLeaders struct {
	mu sync.Mutex
	m  map[[2]string]map[int32]int32 // (cluster, topic) -> partition -> leader
}

func (e *endLeaders) get(cluster, topic string) map[int32]int32 {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[[2]string{cluster, topic}]
}

func (e *endLeaders) set(cluster, topic string, leaders map[int32]int32) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[[2]string]map[int32]int32{}
	}
	if leaders == nil {
		delete(e.m, [2]string{cluster, topic})
		return
	}
	e.m[[2]string{cluster, topic}] = leaders
}

// Warm learns the partition leaders of topics on cluster (one metadata
// request), before their cutovers hold anything.
func (a adminOffsets) Warm(ctx context.Context, cluster string, topics []string) {
	if a.leaders == nil || len(topics) == 0 {
		return
	}
	adm, err := a.admins.get(a.cfg, cluster)
	if err != nil {
		return
	}
	md, err := adm.Metadata(ctx, topics...)
	if err != nil {
		return
	}
	tds := md.Topics
	brokers := map[int32]string{} // the leaders' addresses
	defer func() {
		// The drain's freeze connections, dialed now rather than in
		// the hold.
		cl, err := a.admins.client(a.cfg, cluster)
		if err == nil {
			a.freeze.prepare(ctx, cluster, cl, brokers)
		}
	}()
	for _, td := range tds {
		if td.Err != nil || len(td.Partitions) == 0 {
			continue
		}
		leaders := make(map[int32]int32, len(td.Partitions))
		for p, pd := range td.Partitions {
			if pd.Err != nil || pd.Leader < 0 {
				leaders = nil
				break
			}
			leaders[p] = pd.Leader
		}
		if leaders != nil {
			a.leaders.set(cluster, td.Topic, leaders)
			for _, l := range leaders {
				for _, b := range md.Brokers {
					if b.NodeID == l {
						brokers[l] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
					}
				}
			}
		}
	}
}

func (a adminOffsets) Ends(ctx context.Context, cluster, topic string, stable bool) (map[int32]int64, error) {
	if ends, ok := a.quickEnds(ctx, cluster, topic, stable); ok {
		return ends, nil
	}
	adm, err := a.admins.get(a.cfg, cluster)
	if err != nil {
		return nil, err
	}
	list := adm.ListEndOffsets
	if stable {
		list = adm.ListCommittedOffsets
	}
	listed, err := list(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("%s end offsets: %w", cluster, err)
	}
	ends := map[int32]int64{}
	var lerr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && lerr == nil {
			lerr = fmt.Errorf("%s end offset of partition %d: %w", cluster, o.Partition, o.Err)
		}
		ends[o.Partition] = o.Offset
	})
	if lerr == nil && len(ends) == 0 {
		lerr = fmt.Errorf("the %s lists no partitions of %s", cluster, topic)
	}
	return ends, lerr
}

// Producers describes the producers of topic's partitions on cluster
// (DescribeProducers): each upstream producer's epoch and last sequence.
func (a adminOffsets) Producers(ctx context.Context, cluster, topic string) (map[int32][]proxy.ProducerState, error) {
	adm, err := a.admins.get(a.cfg, cluster)
	if err != nil {
		return nil, err
	}
	described, err := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: nil})
	if err != nil {
		return nil, fmt.Errorf("%s producers of %s: %w", cluster, topic, err)
	}
	out := map[int32][]proxy.ProducerState{}
	for _, p := range described[topic].Partitions {
		if p.Err != nil {
			return nil, fmt.Errorf("%s producers of %s/%d: %w", cluster, topic, p.Partition, p.Err)
		}
		ps := make([]proxy.ProducerState, 0, len(p.ActiveProducers))
		for _, d := range p.ActiveProducers {
			ps = append(ps, proxy.ProducerState{ID: d.ProducerID, Epoch: d.ProducerEpoch, LastSequence: d.LastSequence})
		}
		out[p.Partition] = ps
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the %s describes no partitions of %s", cluster, topic)
	}
	return out, nil
}

// quickEnds lists topic's ends from the leaders Warm learned, one
// ListOffsets per leader, all at once. Any error or a partition left out
// forgets the leaders and reports false: the caller does the full lookup.
func (a adminOffsets) quickEnds(ctx context.Context, cluster, topic string, stable bool) (map[int32]int64, bool) {
	leaders := a.leaders.get(cluster, topic)
	if leaders == nil {
		return nil, false
	}
	cl, err := a.admins.client(a.cfg, cluster)
	if err != nil || cl == nil {
		return nil, false
	}
	reqs := map[int32]*kmsg.ListOffsetsRequest{}
	for p, l := range leaders {
		req := reqs[l]
		if req == nil {
			req = kmsg.NewPtrListOffsetsRequest()
			req.ReplicaID = -1
			if stable {
				req.IsolationLevel = 1
			}
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = topic
			req.Topics = append(req.Topics, rt)
			reqs[l] = req
		}
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, -1, -1
		req.Topics[0].Partitions = append(req.Topics[0].Partitions, rp)
	}
	type answer struct {
		resp *kmsg.ListOffsetsResponse
		err  error
	}
	answers := make(chan answer, len(reqs))
	for l, req := range reqs {
		go func() {
			resp, err := req.RequestWith(ctx, cl.Broker(int(l)))
			answers <- answer{resp, err}
		}()
	}
	ends := make(map[int32]int64, len(leaders))
	ok := true
	for range reqs {
		a := <-answers
		if a.err != nil {
			ok = false
			continue
		}
		for _, t := range a.resp.Topics {
			for _, p := range t.Partitions {
				if t.Topic != topic || p.ErrorCode != 0 {
					ok = false
					continue
				}
				ends[p.Partition] = p.Offset
			}
		}
	}
	if !ok || len(ends) != len(leaders) {
		a.leaders.set(cluster, topic, nil)
		return nil, false
	}
	return ends, true
}

// replicationPort is the replication as the cutover controller sees it.
type replicationPort struct {
	rp   *replication
	ends endOffsets
}

func (r replicationPort) Home(topic string) string         { return r.rp.home(topic) }
func (r replicationPort) CopiesInto(topic, to string) bool { return r.rp.copiesInto(topic, to) }
func (r replicationPort) SaveCopyBack(pl *flipPlan) error  { return r.rp.saveCopyBack(pl) }
func (r replicationPort) AdoptFlip(pl *flipPlan)           { r.rp.adoptFlip(pl) }
func (r replicationPort) PlanPoints(topic, from, to string, points map[int32]flipPoint, left map[int32]*replicator.FlippedMap) (*flipPlan, error) {
	return r.rp.planPoints(topic, from, to, points, left)
}
func (r replicationPort) SaveFlip(pl *flipPlan, skip map[int32]bool) error {
	return r.rp.saveFlip(pl, skip)
}
func (r replicationPort) StartCopy(topic, to string) error { return r.rp.startCopy(topic, to) }
func (r replicationPort) LoadHome(topic, cluster string, partitions int32) error {
	return r.rp.loadHome(topic, cluster, partitions)
}

func (r replicationPort) CopiedThrough(topic, to string, partition int32) int64 {
	if c := r.rp.copyInto(to); c != nil {
		return c.CopiedThrough(topic, partition)
	}
	return -1
}

func (r replicationPort) Urge(topic, to string) (release func()) {
	if c := r.rp.copyInto(to); c != nil {
		return c.Urge(topic)
	}
	return func() {}
}

func (r replicationPort) WaitCopied(ctx context.Context, topic, to string, ends map[int32]int64) error {
	c := r.rp.copyInto(to)
	if c == nil {
		return fmt.Errorf("nothing copies the topic into the %s", to)
	}
	if err := c.TopicErr(topic); err != nil {
		return fmt.Errorf("replication of the topic failed: %w", err)
	}
	// Every partition urgent at once, not each only once the one before
	// it is copied.
	defer c.Urge(topic)()
	for p, end := range ends {
		if err := c.WaitCopied(ctx, topic, p, end); err != nil {
			return fmt.Errorf("partition %d not copied up to %d within the hold: %w", p, end, err)
		}
	}
	return nil
}

// SealFlip stops the copy and plans the flip: the new home's sealed maps,
// checked against its log, and the maps of the copy back.
func (r replicationPort) SealFlip(ctx context.Context, topic, from, to string, ends map[int32]int64) (*flipPlan, error) {
	// Produce is held and the copy has every record below ends, so
	// neither log moves any more: stop the copy (its maps' last save) and
	// list both ends at once, so the hold waits for the slowest of the
	// three, not their sum.
	var toEnds, fromEnds map[int32]int64
	var toErr, fromErr error
	listed := make(chan struct{}, 2)
	go func() {
		defer func() { listed <- struct{}{} }()
		toEnds, toErr = r.ends.Ends(ctx, to, topic, false)
	}()
	go func() {
		defer func() { listed <- struct{}{} }()
		fromEnds, fromErr = r.ends.Ends(ctx, from, topic, false)
	}()
	final, err := r.rp.stopCopy(topic, to)
	<-listed
	<-listed
	if err != nil {
		return nil, err
	}
	if fromErr != nil {
		return nil, fromErr
	}
	// ends may name only some partitions (several instances: those this
	// instance copies); the others are not this flip's to check.
	fromEnds, toEnds = onlyIn(fromEnds, ends), onlyIn(toEnds, ends)
	for p, e := range fromEnds {
		if e != ends[p] {
			return nil, fmt.Errorf("partition %d: the %s's log moved from %d to %d while produce was held: something writes to it around kproxy", p, from, ends[p], e)
		}
	}
	pl, err := r.rp.planFlip(topic, from, to, final, fromEnds)
	if err != nil {
		return nil, err
	}
	// The sealed maps must end exactly where the new home's log ends: a
	// record there the map does not account for would shift every later
	// virtual offset.
	if toErr != nil {
		return nil, toErr
	}
	for {
		behind := false
		for p, e := range toEnds {
			f := pl.sealed[p]
			if f == nil {
				return nil, fmt.Errorf("partition %d has no offset map on the %s", p, to)
			}
			_, te := f.FlipPoint()
			switch {
			case te > e:
				// A transactional copy (several instances) counts its
				// commit marker in the map once EndTxn answered; the
				// broker appends the marker a moment later.
				behind = true
			case te != e:
				return nil, fmt.Errorf("partition %d: the offset map ends at %s offset %d but its log ends at %d", p, to, te, e)
			}
		}
		if !behind {
			return pl, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the %s's log did not reach the copy's offset maps (a commit marker not written): %w", to, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
		now, err := r.ends.Ends(ctx, to, topic, false)
		if err != nil {
			return nil, err
		}
		toEnds = onlyIn(now, ends)
	}
}

// onlyIn is m restricted to the partitions of keep (m itself when keep has
// them all).
func onlyIn(m, keep map[int32]int64) map[int32]int64 {
	if len(m) == len(keep) || m == nil {
		return m
	}
	out := make(map[int32]int64, len(keep))
	for p, v := range m {
		if _, ok := keep[p]; ok {
			out[p] = v
		}
	}
	return out
}

// fileMarkers keeps cutover markers in state_dir/cutover: flips.jsonl, one
// line per flip or rollback, the last line of a topic winning, appended
// with a single fsync (the hold waits for it: it is the flip's commit
// point). Markers of earlier versions, <topic>.json files, are read too
// (the journal's lines come after them). An empty dir (no state_dir) loads
// nothing and refuses to save: a flip must survive a restart.
type fileMarkers struct {
	dir string

	mu      sync.Mutex // guards journal
	journal *statefile.AppendFile
}

// markerJournal is the markers' append-only file in the cutover directory.
const markerJournal = "flips.jsonl"

func (f *fileMarkers) Load() ([]cutoverMarker, error) {
	if f.dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	byTopic := map[string]cutoverMarker{}
	var order []string
	note := func(m cutoverMarker) {
		if _, ok := byTopic[m.Topic]; !ok {
			order = append(order, m.Topic)
		}
		byTopic[m.Topic] = m
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var m cutoverMarker
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		note(m)
	}
	path := filepath.Join(f.dir, markerJournal)
	lines := 0
	torn, err := statefile.ReadLines(path, func(b []byte) error {
		var m cutoverMarker
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		if m.Topic == "" {
			return errors.New("a marker without a topic")
		}
		note(m)
		lines++
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]cutoverMarker, 0, len(order))
	for _, t := range order {
		out = append(out, byTopic[t])
	}
	// A torn last line (a crash mid-append) must not be followed by the
	// next append; a long journal is rewritten as one line per topic.
	if torn > 0 || lines > 2*len(out)+64 {
		var b []byte
		for _, m := range out {
			line, _ := json.Marshal(m)
			b = append(append(b, line...), '\n')
		}
		if err := statefile.WriteAtomic(path, b, 0o644); err != nil {
			return nil, fmt.Errorf("rewriting the flip markers: %w", err)
		}
	}
	return out, nil
}

func (f *fileMarkers) Save(m cutoverMarker) error {
	if f.dir == "" {
		return errors.New("a flip needs state_dir to record it")
	}
	line, _ := json.Marshal(m)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.journal == nil {
		// Once per run: the directory and the journal's name made
		// durable; every later flip costs one fsync of the journal.
		if err := statefile.MkdirAll(f.dir, 0o755); err != nil {
			return fmt.Errorf("the flip's marker cannot be written: %w", err)
		}
		j, err := statefile.OpenAppend(filepath.Join(f.dir, markerJournal), 0o644)
		if err == nil {
			if err = statefile.SyncDir(f.dir); err != nil {
				j.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("the flip's marker cannot be written: %w", err)
		}
		f.journal = j
	}
	// The marker is the flip's commit point: appended durably, or not at
	// all and the cutover aborts with this error.
	if err := f.journal.Append(line); err != nil {
		return fmt.Errorf("the flip's marker cannot be written: %w", err)
	}
	return nil
}

// Close closes the journal.
func (f *fileMarkers) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.journal == nil {
		return nil
	}
	err := f.journal.Close()
	f.journal = nil
	return err
}
