package proxy

import (
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// topicNames gives each topic name one string that kproxy keeps. Produce
// requests are decoded without copying their strings (they alias the
// request frame, which the next request is read into), and each topic name
// is then replaced by its kept string: a forwarded Produce allocates no
// string, and nothing that outlives the request aliases the frame.
var topicNames nameTable

// maxNames bounds the table: past it, names are copied per request, as
// they were before the table.
const maxNames = 1 << 16

type nameTable struct {
	mu sync.RWMutex // guards m
	m  map[string]string
}

// intern returns the kept string equal to name, which may alias a buffer.
func (t *nameTable) intern(name string) string {
	t.mu.RLock()
	s, ok := t.m[name]
	t.mu.RUnlock()
	if ok {
		return s
	}
	s = strings.Clone(name)
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]string{}
	}
	if len(t.m) < maxNames {
		t.m[s] = s
	}
	t.mu.Unlock()
	return s
}

// ownProduceStrings makes a Produce request decoded without copying its
// strings safe to keep: topic names interned, the transactional id copied.
func ownProduceStrings(req *kmsg.ProduceRequest) {
	for i := range req.Topics {
		req.Topics[i].Topic = topicNames.intern(req.Topics[i].Topic)
	}
	if req.TransactionID != nil {
		id := strings.Clone(*req.TransactionID)
		req.TransactionID = &id
	}
}
