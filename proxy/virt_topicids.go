package proxy

// Topic ids (KIP-516): clients see one virtual id per topic name, forever.
// Each cluster draws its own random ids, so the same name has different ids
// on source and target; a client that saw an id change would treat the
// topic as recreated (Java resets its epoch cache and fetch session state;
// franz-go keeps the old id and then fails with UNKNOWN_TOPIC_ID).
//
// The virtual id of a topic is derived from the virtual cluster id and the
// topic name (SHA-256, UUID version 8 bits): the same on every kproxy
// instance, never an upstream id, so no cluster's identity reaches a client.
// The assignment is also written to state_dir, so an id a client saw stays
// even if the derivation ever changes (docs/decisions/004). Fetch answers
// still pass through byte for byte: their topic ids are patched in place
// (fetch_ids.go).
//
// An id this process never handed out is still recognised (resolve):
// another instance of the virtual cluster handed it out (a client reads a
// topic's Metadata from one instance and fetches a partition from the
// instance that leads it), or this one before a restart without state_dir.
// It is the derived id of a topic one of the clusters has, so it is looked
// for among their topics' names (resolveTopicID).
//
// Fields translated: Metadata TopicID (v10+, and requests by id v12+);
// Fetch v13+ request and response ids; Produce v13 request and response ids
// (requests: upstreamTopicID in the handler's plan; answers: the virtual id
// the client named, from the plan); CreateTopics and DeleteTopics ids.
// OffsetCommit/OffsetFetch are capped at v9 (names only), and KIP-848
// heartbeats are translated in their handler.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/statefile"
)

// VirtualTopicID is a topic id as clients see it.
type VirtualTopicID = [16]byte

// topicIDs is the name <-> virtual id table.
type topicIDs struct {
	path string // "" = memory only
	log  hclog.Logger

	mu     sync.RWMutex // guards the maps
	byName map[string]VirtualTopicID
	byID   map[VirtualTopicID]string

	// resolve finds the topic of an id the table lacks (set once by the
	// Server before it starts: resolveTopicID); nil resolves nothing.
	resolve func(VirtualTopicID) (string, bool)
}

type topicIDFile struct {
	Topics map[string]string `json:"topics"` // name -> hex id
}

func loadTopicIDs(dir string, log hclog.Logger) (*topicIDs, error) {
	t := &topicIDs{log: log, byName: map[string]VirtualTopicID{}, byID: map[VirtualTopicID]string{}}
	if dir == "" {
		return t, nil
	}
	if err := statefile.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	t.path = filepath.Join(dir, "topic-ids.json")
	b, err := os.ReadFile(t.path)
	if os.IsNotExist(err) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", t.path, err)
	}
	var f topicIDFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s is corrupt (%v); kproxy will not guess the topic ids clients saw, restore the file or remove it knowingly", t.path, err)
	}
	for name, h := range f.Topics {
		var id VirtualTopicID
		if n, err := hex.Decode(id[:], []byte(h)); err != nil || n != 16 {
			return nil, fmt.Errorf("%s: topic %q has a malformed id %q", t.path, name, h)
		}
		t.byName[name], t.byID[id] = id, name
	}
	return t, nil
}

// lookup returns the virtual id of a topic, if one was assigned.
func (t *topicIDs) lookup(name string) (VirtualTopicID, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	id, ok := t.byName[name]
	return id, ok
}

// name returns the topic a virtual id names; an id the table lacks is
// resolved (and then recorded) when it is a topic's derived id.
func (t *topicIDs) name(id VirtualTopicID) (string, bool) {
	t.mu.RLock()
	n, ok := t.byID[id]
	t.mu.RUnlock()
	if ok || t.resolve == nil || id == (VirtualTopicID{}) {
		return n, ok
	}
	return t.resolve(id)
}

// assign returns the topic's virtual id, assigning candidate if it has none.
// A zero candidate assigns nothing.
func (t *topicIDs) assign(name string, candidate VirtualTopicID) VirtualTopicID {
	if id, ok := t.lookup(name); ok || candidate == (VirtualTopicID{}) {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.byName[name]; ok {
		return id
	}
	if other, taken := t.byID[candidate]; taken {
		// Two names, one upstream id: only possible across clusters by
		// chance (2^-122); refuse to alias them.
		t.log.Error("upstream topic id already names another topic; not assigning", "topic", name, "other_topic", other)
		return VirtualTopicID{}
	}
	t.byName[name], t.byID[candidate] = candidate, name
	if err := t.saveLocked(); err != nil {
		t.log.Error("could not persist virtual topic ids; they will not survive a restart", "path", t.path, "error", err)
	}
	return candidate
}

// saveLocked writes the table atomically and durably (statefile).
func (t *topicIDs) saveLocked() error {
	if t.path == "" {
		return nil
	}
	f := topicIDFile{Topics: make(map[string]string, len(t.byName))}
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		id := t.byName[n]
		f.Topics[n] = hex.EncodeToString(id[:])
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return statefile.WriteAtomic(t.path, b, 0o644)
}

// virtualTopicID returns the id clients see for name: the one recorded in
// state_dir, else the derived one (recorded now).
func (s *Server) virtualTopicID(name string) VirtualTopicID {
	if id, ok := s.topicIDs.lookup(name); ok {
		return id
	}
	return s.topicIDs.assign(name, deriveTopicID(s.opts.ClusterID, name))
}

// assignTopicIDs gives every named topic that has no virtual id yet its
// derived one, with one write of the table: a listing of thousands of new
// topics would otherwise rewrite topic-ids.json once per topic.
func (s *Server) assignTopicIDs(names []string) {
	t := s.topicIDs
	var missing []string
	t.mu.RLock()
	for _, n := range names {
		if _, ok := t.byName[n]; !ok {
			missing = append(missing, n)
		}
	}
	t.mu.RUnlock()
	if len(missing) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	added := false
	for _, n := range missing {
		if _, ok := t.byName[n]; ok {
			continue
		}
		id := deriveTopicID(s.opts.ClusterID, n)
		if other, taken := t.byID[id]; taken {
			t.log.Error("upstream topic id already names another topic; not assigning", "topic", n, "other_topic", other)
			continue
		}
		t.byName[n], t.byID[id] = id, n
		added = true
	}
	if !added {
		return
	}
	if err := t.saveLocked(); err != nil {
		t.log.Error("could not persist virtual topic ids; they will not survive a restart", "path", t.path, "error", err)
	}
}

// resolveTopicID finds the topic a virtual id names when the table lacks
// it: the derived id of a topic a cluster has that has no id yet (a topic
// with a recorded id is found by it). The topics the clusters' metadata
// caches know are tried first; then every cluster lists all its topics
// and they are tried again. The listing runs at most once per
// idResolveEvery (an id no topic has, sent again and again, costs the
// clusters one Metadata request per interval); lookups that miss meanwhile
// wait for a listing in progress and are answered from it.
func (s *Server) resolveTopicID(id VirtualTopicID) (string, bool) {
	s.idResolveMu.Lock()
	defer s.idResolveMu.Unlock()
	if n, ok := s.derivedTopicName(id); ok {
		return n, true
	}
	if !s.idResolveAt.IsZero() && time.Since(s.idResolveAt) < idResolveEvery {
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, uc := range s.clusters {
		if err := uc.refresh(ctx, nil); err != nil {
			s.log.Debug("listing topics to resolve a topic id", "error", err)
		}
	}
	s.idResolveAt = time.Now()
	return s.derivedTopicName(id)
}

// idResolveEvery bounds how often resolveTopicID lists every topic.
const idResolveEvery = time.Second

// derivedTopicName is the topic among the clusters' known topics without
// a recorded id whose derived id is id, recorded now.
func (s *Server) derivedTopicName(id VirtualTopicID) (string, bool) {
	for _, uc := range s.clusters {
		for _, n := range uc.topicNames() {
			if _, recorded := s.topicIDs.lookup(n); recorded || deriveTopicID(s.opts.ClusterID, n) != id {
				continue
			}
			if s.topicIDs.assign(n, id) == id {
				return n, true
			}
		}
	}
	return "", false
}

// deriveTopicID is the virtual id of a topic: 16 bytes of SHA-256 over the
// virtual cluster id and the name, marked as a version 8 (custom) UUID.
func deriveTopicID(clusterID, topic string) VirtualTopicID {
	sum := sha256.Sum256([]byte("kproxy topic id\x00" + clusterID + "\x00" + topic))
	var id VirtualTopicID
	copy(id[:], sum[:16])
	id[6] = id[6]&0x0f | 0x80
	id[8] = id[8]&0x3f | 0x80
	return id
}

// upstreamTopicID translates a virtual id into cluster's id for the same
// name; ok is false when the id is unknown or the cluster lacks the topic.
func (s *Server) upstreamTopicID(cluster string, id VirtualTopicID) (name string, up [16]byte, ok bool) {
	name, ok = s.topicIDs.name(id)
	if !ok {
		return "", up, false
	}
	uc, ok := s.clusters[cluster]
	if !ok {
		return name, up, false
	}
	up, ok = uc.topicID(name)
	return name, up, ok
}

// virtualOf maps a cluster's topic id back to the virtual one (zero ids and
// ids kproxy never learned pass through).
func (s *Server) virtualOf(cluster string, up [16]byte) [16]byte {
	if up == ([16]byte{}) {
		return up
	}
	if uc, ok := s.clusters[cluster]; ok {
		if n, ok := uc.topicName(up); ok {
			return s.virtualTopicID(n)
		}
	}
	return up
}

// topicIDsMetadataTopic gives a Metadata answer's topic its virtual id (an
// upstream that sends no id, below v10, gets none added).
func (s *Server) topicIDsMetadataTopic(t *kmsg.MetadataResponseTopic) {
	if t.Topic != nil && t.TopicID != ([16]byte{}) {
		t.TopicID = s.virtualTopicID(*t.Topic)
	}
}

// topicIDsFetchAnswer gives each topic of a decoded fetch answer (v13+) the
// virtual id the client asked by; virtualIDs maps the cluster's ids to them
// (from the request plan). Ids the request did not name pass through
// virtualOf.
func (s *Server) topicIDsFetchAnswer(cluster string, fr *kmsg.FetchResponse, virtualIDs topicIDPairs) {
	if fr.Version < 13 {
		return
	}
	for i := range fr.Topics {
		fr.Topics[i].TopicID = s.fetchVirtualID(cluster, fr.Topics[i].TopicID, virtualIDs)
	}
}

// topicIDsFetchPassthrough makes a passthrough fetch answer's topic ids
// virtual in place in its bytes (fetch_ids.go); false means the answer must
// be re-encoded instead.
func (s *Server) topicIDsFetchPassthrough(cluster string, body []byte, fr *kmsg.FetchResponse, virtualIDs topicIDPairs) bool {
	if fr.Version < 13 {
		return true
	}
	ids := make([][16]byte, len(fr.Topics))
	same := true
	for i, t := range fr.Topics {
		ids[i] = s.fetchVirtualID(cluster, t.TopicID, virtualIDs)
		same = same && ids[i] == t.TopicID
	}
	return same || patchFetchTopicIDs(body, fr, ids)
}

func (s *Server) fetchVirtualID(cluster string, up [16]byte, virtualIDs topicIDPairs) [16]byte {
	if v, ok := virtualIDs.virtual(up); ok {
		return v
	}
	return s.virtualOf(cluster, up)
}

// topicIDPairs maps a cluster's topic ids to the virtual ids a request
// named them by. A request names few topics per leader: a slice, not a
// map (it is built on every Fetch).
type topicIDPairs []struct{ up, virtual [16]byte }

// add records that up was asked for as virtual (once per pair).
func (p topicIDPairs) add(up, virtual [16]byte) topicIDPairs {
	if n := len(p); n > 0 && p[n-1].up == up && p[n-1].virtual == virtual {
		return p
	}
	if _, ok := p.virtual(up); ok {
		return p
	}
	return append(p, struct{ up, virtual [16]byte }{up, virtual})
}

// virtual is the id the request named up by.
func (p topicIDPairs) virtual(up [16]byte) ([16]byte, bool) {
	for _, e := range p {
		if e.up == up {
			return e.virtual, true
		}
	}
	return [16]byte{}, false
}
