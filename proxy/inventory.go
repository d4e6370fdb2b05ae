package proxy

// The client inventory: who talks to kproxy. One record per client
// connection, updated as requests are dispatched (conn.go calls observe and
// reached): client.id, the client software ApiVersions v3+ names, the
// source address, the topics it produced to and fetched from, its groups
// and transactional ids, the upstream clusters its requests reached, and
// when it was first and last seen. An operator reads it (/clients, `kproxy
// clients`, the status page) to learn which applications still depend on a
// cluster before removing it.
//
// Bounded: open connections are bounded by limits.max_connections; a closed
// connection's record is kept for inventoryKeepClosed (so a short-lived
// client still shows up) and at most inventoryMaxClosed of them; each set
// in a record holds at most inventoryMaxNames names.

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	inventoryKeepClosed = 10 * time.Minute
	inventoryMaxClosed  = 1000
	inventoryMaxNames   = 100
)

// ClientInfo is one client connection in the inventory.
type ClientInfo struct {
	Conn            uint64    `json:"conn"`
	Remote          string    `json:"remote"`
	ClientID        string    `json:"client_id"`
	Software        string    `json:"software,omitempty"`
	SoftwareVersion string    `json:"software_version,omitempty"`
	Produced        []string  `json:"produced,omitempty"`
	Fetched         []string  `json:"fetched,omitempty"`
	Groups          []string  `json:"groups,omitempty"`
	TransactionalID []string  `json:"transactional_ids,omitempty"`
	Clusters        []string  `json:"clusters,omitempty"` // upstream clusters its requests reached
	Requests        int64     `json:"requests"`
	FirstSeen       time.Time `json:"first_seen"`
	LastSeen        time.Time `json:"last_seen"`
	Open            bool      `json:"open"`
	ClosedAt        time.Time `json:"closed_at,omitempty"`
}

// clientRecord is one connection's entry; its own lock keeps the per-request
// update off the inventory's lock.
type clientRecord struct {
	mu   sync.Mutex
	info ClientInfo
	sets [5]map[string]struct{} // produced, fetched, groups, transactional ids, clusters
}

const (
	setProduced = iota
	setFetched
	setGroups
	setTxnIDs
	setClusters
)

func (r *clientRecord) addLocked(set int, name string) {
	if name == "" {
		return
	}
	m := r.sets[set]
	if m == nil {
		m = map[string]struct{}{}
		r.sets[set] = m
	}
	if _, ok := m[name]; !ok && len(m) < inventoryMaxNames {
		m[name] = struct{}{}
	}
}

// observe records one request of the connection (called at dispatch).
func (r *clientRecord) observe(s *Server, clientID string, req kmsg.Request) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.info.LastSeen = now
	r.info.Requests++
	if clientID != "" {
		r.info.ClientID = clientID
	}
	switch q := req.(type) {
	case *kmsg.ApiVersionsRequest:
		if q.ClientSoftwareName != "" {
			r.info.Software, r.info.SoftwareVersion = q.ClientSoftwareName, q.ClientSoftwareVersion
		}
	case *kmsg.ProduceRequest:
		for i := range q.Topics {
			name := q.Topics[i].Topic
			if q.Version >= 13 {
				name, _ = s.topicIDs.name(q.Topics[i].TopicID)
			}
			r.addLocked(setProduced, name)
		}
		if q.TransactionID != nil {
			r.addLocked(setTxnIDs, *q.TransactionID)
		}
	case *kmsg.FetchRequest:
		for i := range q.Topics {
			name := q.Topics[i].Topic
			if q.Version >= 13 {
				name, _ = s.topicIDs.name(q.Topics[i].TopicID)
			}
			r.addLocked(setFetched, name)
		}
	case *kmsg.JoinGroupRequest:
		r.addLocked(setGroups, q.Group)
	case *kmsg.SyncGroupRequest:
		r.addLocked(setGroups, q.Group)
	case *kmsg.OffsetCommitRequest:
		r.addLocked(setGroups, q.Group)
	case *kmsg.OffsetFetchRequest:
		r.addLocked(setGroups, q.Group)
		for i := range q.Groups {
			r.addLocked(setGroups, q.Groups[i].Group)
		}
	case *kmsg.ConsumerGroupHeartbeatRequest:
		r.addLocked(setGroups, q.Group)
	case *kmsg.TxnOffsetCommitRequest:
		r.addLocked(setGroups, q.Group)
		r.addLocked(setTxnIDs, q.TransactionalID)
	case *kmsg.InitProducerIDRequest:
		if q.TransactionalID != nil {
			r.addLocked(setTxnIDs, *q.TransactionalID)
		}
	case *kmsg.EndTxnRequest:
		r.addLocked(setTxnIDs, q.TransactionalID)
	}
}

// reached records that a request of the connection went to cluster.
func (r *clientRecord) reached(cluster string) {
	r.mu.Lock()
	r.addLocked(setClusters, cluster)
	r.mu.Unlock()
}

func (r *clientRecord) view() ClientInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.info
	list := func(set int) []string {
		out := make([]string, 0, len(r.sets[set]))
		for k := range r.sets[set] {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	v.Produced, v.Fetched, v.Groups, v.TransactionalID, v.Clusters =
		list(setProduced), list(setFetched), list(setGroups), list(setTxnIDs), list(setClusters)
	return v
}

// inventory is the server's set of records. Its zero value is ready.
type inventory struct {
	mu     sync.Mutex // guards the fields below
	open   map[uint64]*clientRecord
	closed []*clientRecord // oldest first
}

// add starts the record of a new connection.
func (inv *inventory) add(conn uint64, remote string) *clientRecord {
	now := time.Now()
	r := &clientRecord{info: ClientInfo{Conn: conn, Remote: remote, FirstSeen: now, LastSeen: now, Open: true}}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.open == nil {
		inv.open = map[uint64]*clientRecord{}
	}
	inv.open[conn] = r
	return r
}

// remove moves a closed connection's record to the closed list, dropping
// the ones past their keep time or over the bound.
func (inv *inventory) remove(conn uint64) {
	now := time.Now()
	inv.mu.Lock()
	defer inv.mu.Unlock()
	r := inv.open[conn]
	if r == nil {
		return
	}
	delete(inv.open, conn)
	r.mu.Lock()
	r.info.Open, r.info.ClosedAt = false, now
	r.mu.Unlock()
	inv.closed = append(inv.closed, r)
	inv.expireLocked(now)
}

func (inv *inventory) expireLocked(now time.Time) {
	drop := max(len(inv.closed)-inventoryMaxClosed, 0)
	for drop < len(inv.closed) && now.Sub(inv.closed[drop].info.ClosedAt) > inventoryKeepClosed {
		drop++
	}
	inv.closed = slices.Delete(inv.closed, 0, drop)
}

// list is every record: open connections, then the recently closed ones.
func (inv *inventory) list() []ClientInfo {
	inv.mu.Lock()
	inv.expireLocked(time.Now())
	recs := make([]*clientRecord, 0, len(inv.open)+len(inv.closed))
	for _, r := range inv.open {
		recs = append(recs, r)
	}
	recs = append(recs, inv.closed...)
	inv.mu.Unlock()
	out := make([]ClientInfo, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.view())
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Open != b.Open {
			return a.Open
		}
		if a.ClientID != b.ClientID {
			return a.ClientID < b.ClientID
		}
		return a.Conn < b.Conn
	})
	return out
}

// Clients is the client inventory: every open connection and the ones
// closed in the last ten minutes.
func (s *Server) Clients() []ClientInfo { return s.inventory.list() }
