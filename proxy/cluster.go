package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/secure"
)

// UpstreamNodeID is a node id as a real broker numbers itself. It never
// reaches a client: see VirtualNodeID.
type UpstreamNodeID int32

// versionRange is an inclusive [min, max] API version range.
type versionRange struct{ min, max int16 }

// upstreamCluster is kproxy's own view of one real cluster: its brokers,
// partition leaders, topic ids and coordinators, learned through a kgo
// client that kproxy uses only for these control-plane lookups. Data-path
// requests never go through this client (see upstream.go).
type upstreamCluster struct {
	name string
	log  hclog.Logger
	cl   *kgo.Client

	mu        sync.RWMutex // guards the fields below
	brokers   map[UpstreamNodeID]string
	leaders   map[string][]UpstreamNodeID // topic -> partition index -> leader (-1 unknown)
	idToTopic map[[16]byte]string
	topicToID map[string][16]byte
	coords    map[coordKey]UpstreamNodeID
	versions  map[int16]versionRange
	clusterID string
	reachable bool
	lastErr   string
	// countsGen changes whenever a topic's partition count does (or a
	// topic appears or goes): shared Metadata answers depend on the
	// counts through the split-route check (metadata_view.go).
	countsGen atomic.Uint64

	refreshMu sync.Mutex // serializes metadata refreshes

	// view is the translated topic listing Metadata answers are built
	// from (metadata_view.go), kept by refresh.
	view viewHolder
}

type coordKey struct {
	typ int8
	key string
}

func newUpstreamCluster(name string, bootstrap []string, sec secure.Upstream, log hclog.Logger) (*upstreamCluster, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(bootstrap...),
		kgo.ClientID("kproxy-" + name),
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.RequestRetries(3),
		kgo.RetryTimeout(15 * time.Second),
	}, sec.KgoOpts()...)...)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	return &upstreamCluster{
		name:      name,
		log:       log.With("cluster", name),
		cl:        cl,
		brokers:   map[UpstreamNodeID]string{},
		leaders:   map[string][]UpstreamNodeID{},
		idToTopic: map[[16]byte]string{},
		topicToID: map[string][16]byte{},
		coords:    map[coordKey]UpstreamNodeID{},
	}, nil
}

func (uc *upstreamCluster) close() { uc.cl.Close() }

// connect loads brokers and the API versions every broker supports. It is
// called at start-up (retrying until it works) and whenever the cluster was
// unreachable.
func (uc *upstreamCluster) connect(ctx context.Context) error {
	if err := uc.refresh(ctx, nil); err != nil {
		return err
	}
	uc.mu.RLock()
	ids := make([]UpstreamNodeID, 0, len(uc.brokers))
	for id := range uc.brokers {
		ids = append(ids, id)
	}
	uc.mu.RUnlock()
	var merged map[int16]versionRange
	for _, id := range ids {
		req := kmsg.NewPtrApiVersionsRequest()
		req.ClientSoftwareName = "kproxy"
		req.ClientSoftwareVersion = "0"
		resp, err := req.RequestWith(ctx, uc.cl.Broker(int(id)))
		if err != nil {
			return fmt.Errorf("cluster %s broker %d: api versions: %w", uc.name, id, err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return fmt.Errorf("cluster %s broker %d: api versions: %w", uc.name, id, err)
		}
		got := map[int16]versionRange{}
		for _, k := range resp.ApiKeys {
			got[k.ApiKey] = versionRange{k.MinVersion, k.MaxVersion}
		}
		merged = intersectVersions(merged, got)
	}
	uc.mu.Lock()
	uc.versions = merged
	uc.reachable = true
	uc.lastErr = ""
	uc.mu.Unlock()
	return nil
}

func intersectVersions(a, b map[int16]versionRange) map[int16]versionRange {
	if a == nil {
		return b
	}
	out := map[int16]versionRange{}
	for k, ra := range a {
		rb, ok := b[k]
		if !ok {
			continue
		}
		r := versionRange{max(ra.min, rb.min), min(ra.max, rb.max)}
		if r.min <= r.max {
			out[k] = r
		}
	}
	return out
}

// refresh loads metadata for topics (nil = all topics) and updates the
// broker table, leaders and topic ids.
func (uc *upstreamCluster) refresh(ctx context.Context, topics []string) error {
	uc.refreshMu.Lock()
	defer uc.refreshMu.Unlock()
	req := kmsg.NewPtrMetadataRequest()
	if topics != nil {
		req.Topics = make([]kmsg.MetadataRequestTopic, 0, len(topics))
		for _, t := range topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	asked, seq := time.Now(), uc.view.dirtySeq()
	resp, err := req.RequestWith(ctx, uc.cl)
	if err != nil {
		uc.mu.Lock()
		uc.reachable = false
		uc.lastErr = err.Error()
		uc.mu.Unlock()
		uc.view.drop()
		return fmt.Errorf("cluster %s: metadata: %w", uc.name, err)
	}
	uc.learnMetadata(resp)
	if resp.ErrorCode != 0 {
		uc.view.drop() // v13's top-level error: the answer lists nothing
		return nil
	}
	uc.view.learn(topics, resp, seq, asked)
	return nil
}

// learnMetadata records what an upstream Metadata response (ours or a
// client's, before rewriting) says about brokers, leaders and topic ids.
func (uc *upstreamCluster) learnMetadata(resp *kmsg.MetadataResponse) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if len(resp.Brokers) > 0 {
		brokers := make(map[UpstreamNodeID]string, len(resp.Brokers))
		for _, b := range resp.Brokers {
			brokers[UpstreamNodeID(b.NodeID)] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
		uc.brokers = brokers
	}
	if resp.ClusterID != nil {
		uc.clusterID = *resp.ClusterID
	}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		name := *t.Topic
		if t.ErrorCode != 0 {
			if t.ErrorCode == kerr.UnknownTopicOrPartition.Code {
				if _, had := uc.leaders[name]; had {
					delete(uc.leaders, name)
					uc.countsGen.Add(1)
				}
			}
			continue
		}
		parts := make([]UpstreamNodeID, len(t.Partitions))
		for i := range parts {
			parts[i] = -1
		}
		for _, p := range t.Partitions {
			if int(p.Partition) < len(parts) && p.ErrorCode == 0 {
				parts[p.Partition] = UpstreamNodeID(p.Leader)
			}
		}
		if old, had := uc.leaders[name]; !had || len(old) != len(parts) {
			uc.countsGen.Add(1)
		}
		uc.leaders[name] = parts
		if t.TopicID != ([16]byte{}) {
			uc.idToTopic[t.TopicID] = name
			uc.topicToID[name] = t.TopicID
		}
	}
	uc.reachable = true
}

// leader returns the partition's leader and its address.
func (uc *upstreamCluster) leader(topic string, partition int32) (UpstreamNodeID, string, bool) {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	parts, ok := uc.leaders[topic]
	if !ok || partition < 0 || int(partition) >= len(parts) || parts[partition] < 0 {
		return -1, "", false
	}
	id := parts[partition]
	addr, ok := uc.brokers[id]
	return id, addr, ok
}

func (uc *upstreamCluster) knowsTopic(topic string) bool {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	_, ok := uc.leaders[topic]
	return ok
}

// topicNames lists the topics the cluster's metadata cache knows.
func (uc *upstreamCluster) topicNames() []string {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	names := make([]string, 0, len(uc.leaders))
	for n := range uc.leaders {
		names = append(names, n)
	}
	return names
}

func (uc *upstreamCluster) topicName(id [16]byte) (string, bool) {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	n, ok := uc.idToTopic[id]
	return n, ok
}

func (uc *upstreamCluster) brokerAddr(id UpstreamNodeID) (string, bool) {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	a, ok := uc.brokers[id]
	return a, ok
}

// anyBroker picks a random known broker, for requests any broker can serve
// (KRaft brokers forward controller requests themselves).
func (uc *upstreamCluster) anyBroker() (UpstreamNodeID, string, bool) {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	if len(uc.brokers) == 0 {
		return -1, "", false
	}
	ids := make([]UpstreamNodeID, 0, len(uc.brokers))
	for id := range uc.brokers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	id := ids[rand.IntN(len(ids))]
	return id, uc.brokers[id], true
}

func (uc *upstreamCluster) allBrokers() map[UpstreamNodeID]string {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	out := make(map[UpstreamNodeID]string, len(uc.brokers))
	for k, v := range uc.brokers {
		out[k] = v
	}
	return out
}

func (uc *upstreamCluster) apiVersions() map[int16]versionRange {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	return uc.versions
}

// errCoordinatorUnknown wraps a coordinator lookup failure; handlers turn it
// into COORDINATOR_NOT_AVAILABLE so clients retry.
var errCoordinatorUnknown = errors.New("coordinator unknown")

// coordinator returns the broker coordinating key (typ 0 group, 1 txn).
func (uc *upstreamCluster) coordinator(ctx context.Context, typ int8, key string) (UpstreamNodeID, string, error) {
	ck := coordKey{typ, key}
	uc.mu.RLock()
	id, ok := uc.coords[ck]
	addr, aok := uc.brokers[id]
	uc.mu.RUnlock()
	if ok && aok {
		return id, addr, nil
	}
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType = typ
	req.CoordinatorKey = key
	req.CoordinatorKeys = []string{key}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, uc.cl)
	if err != nil {
		return -1, "", fmt.Errorf("%w: cluster %s: %v", errCoordinatorUnknown, uc.name, err)
	}
	code, node := resp.ErrorCode, resp.NodeID
	if len(resp.Coordinators) > 0 {
		code, node = resp.Coordinators[0].ErrorCode, resp.Coordinators[0].NodeID
	}
	if err := kerr.ErrorForCode(code); err != nil {
		return -1, "", fmt.Errorf("%w: cluster %s key %q: %v", errCoordinatorUnknown, uc.name, key, err)
	}
	id = UpstreamNodeID(node)
	addr, aok = uc.brokerAddr(id)
	if !aok {
		if err := uc.refresh(ctx, []string{}); err != nil {
			return -1, "", err
		}
		if addr, aok = uc.brokerAddr(id); !aok {
			return -1, "", fmt.Errorf("%w: cluster %s: coordinator %d not in metadata", errCoordinatorUnknown, uc.name, id)
		}
	}
	uc.mu.Lock()
	uc.coords[ck] = id
	uc.mu.Unlock()
	return id, addr, nil
}

// forgetCoordinator drops a cached coordinator after NOT_COORDINATOR or a
// connection failure, so the next request looks it up again.
func (uc *upstreamCluster) forgetCoordinator(typ int8, key string) {
	uc.mu.Lock()
	delete(uc.coords, coordKey{typ, key})
	uc.mu.Unlock()
}

type clusterStatus struct {
	Name      string   `json:"name"`
	Reachable bool     `json:"reachable"`
	Brokers   []string `json:"brokers"`
	Topics    int      `json:"topics"`
	LastError string   `json:"last_error,omitempty"`
}

func (uc *upstreamCluster) status() clusterStatus {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	s := clusterStatus{Name: uc.name, Reachable: uc.reachable, Topics: len(uc.leaders), LastError: uc.lastErr}
	for _, a := range uc.brokers {
		s.Brokers = append(s.Brokers, a)
	}
	sort.Strings(s.Brokers)
	return s
}

func (uc *upstreamCluster) topicID(name string) ([16]byte, bool) {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	id, ok := uc.topicToID[name]
	return id, ok
}

// learnTopicID records a topic id the cluster reported outside Metadata
// (CreateTopics answers), so the first fetch by id needs no refresh.
func (uc *upstreamCluster) learnTopicID(name string, id [16]byte) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.idToTopic[id] = name
	uc.topicToID[name] = id
}

// partitionCount is the topic's partition count, or -1 if unknown.
func (uc *upstreamCluster) partitionCount(topic string) int {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	parts, ok := uc.leaders[topic]
	if !ok {
		return -1
	}
	return len(parts)
}
