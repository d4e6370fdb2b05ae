package control

// The production side of the cutover controller's ports (cutover.go):
// end offsets through the shared admin clients, the two-way replication,
// and markers as files in state_dir/cutover.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/statefile"
)

// adminOffsets lists end offsets with the controllers' admin clients.
// Clusters are restart-only settings: the config given at start-up names
// them for good.
type adminOffsets struct {
	admins *clusterAdmins
	cfg    *config.Config
}

func (a adminOffsets) Ends(ctx context.Context, cluster, topic string, stable bool) (map[int32]int64, error) {
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

// replicationPort is the replication as the cutover controller sees it.
type replicationPort struct {
	rp   *replication
	ends endOffsets
}

func (r replicationPort) Home(topic string) string         { return r.rp.home(topic) }
func (r replicationPort) CopiesInto(topic, to string) bool { return r.rp.copiesInto(topic, to) }
func (r replicationPort) SaveCopyBack(pl *flipPlan) error  { return r.rp.saveCopyBack(pl) }
func (r replicationPort) AdoptFlip(pl *flipPlan)           { r.rp.adoptFlip(pl) }
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

func (r replicationPort) WaitCopied(ctx context.Context, topic, to string, ends map[int32]int64) error {
	c := r.rp.copyInto(to)
	if c == nil {
		return fmt.Errorf("nothing copies the topic into the %s", to)
	}
	if err := c.TopicErr(topic); err != nil {
		return fmt.Errorf("replication of the topic failed: %w", err)
	}
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
	final, err := r.rp.stopCopy(topic, to)
	if err != nil {
		return nil, err
	}
	// Both logs are still now (produce held, copy stopped): list both ends
	// at once.
	var toEnds map[int32]int64
	var toErr error
	listed := make(chan struct{})
	go func() {
		defer close(listed)
		toEnds, toErr = r.ends.Ends(ctx, to, topic, false)
	}()
	fromEnds, err := r.ends.Ends(ctx, from, topic, false)
	<-listed
	if err != nil {
		return nil, err
	}
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
	for p, e := range toEnds {
		f := pl.sealed[p]
		if f == nil {
			return nil, fmt.Errorf("partition %d has no offset map on the %s", p, to)
		}
		if _, te := f.FlipPoint(); te != e {
			return nil, fmt.Errorf("partition %d: the offset map ends at %s offset %d but its log ends at %d", p, to, te, e)
		}
	}
	return pl, nil
}

// fileMarkers keeps cutover markers as state_dir/cutover/<topic>.json. An
// empty dir (no state_dir) loads nothing and refuses to save: a flip must
// survive a restart.
type fileMarkers struct{ dir string }

func (f fileMarkers) Load() ([]cutoverMarker, error) {
	if f.dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var out []cutoverMarker
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
		out = append(out, m)
	}
	return out, nil
}

func (f fileMarkers) Save(m cutoverMarker) error {
	if f.dir == "" {
		return errors.New("a flip needs state_dir to record it")
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := statefile.MkdirAll(f.dir, 0o755); err != nil {
		return fmt.Errorf("the flip's marker cannot be written: %w", err)
	}
	// The marker is the flip's commit point: written durably (statefile),
	// or not at all and the cutover aborts with this error.
	if err := statefile.WriteAtomic(filepath.Join(f.dir, m.Topic+".json"), b, 0o644); err != nil {
		return fmt.Errorf("the flip's marker cannot be written: %w", err)
	}
	return nil
}
