package proxy

import "sync"

// keyedLock is a mutex per key: holders of different keys never wait for
// each other, and a key's entry lives only while someone holds or waits for
// it (so the map does not grow with every key ever locked).
type keyedLock[K comparable] struct {
	mu sync.Mutex
	m  map[K]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int // holders and waiters; guarded by keyedLock.mu
}

// lock locks k and returns its unlock.
func (l *keyedLock[K]) lock(k K) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[K]*keyedEntry{}
	}
	e := l.m[k]
	if e == nil {
		e = &keyedEntry{}
		l.m[k] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, k)
		}
		l.mu.Unlock()
	}
}
