package proxy

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/kproxy/kproxy/config"
)

// Limits bound what clients and upstream brokers can cost kproxy. Zero
// fields take config's defaults (Limits.withDefaults); docs/operations.md
// lists each with its metric.
type Limits struct {
	// MaxConnections caps open client connections; a connection over the
	// cap is closed as soon as it is accepted.
	MaxConnections int
	// MaxConnectionsPerIP caps open client connections from one source IP.
	MaxConnectionsPerIP int
	// BufferBytes is the global budget of buffered client request and
	// response bytes. Reading stops (every connection waits) while it is
	// spent; a single frame larger than the budget is still admitted when
	// nothing else is buffered, so MaxFrameBytes above BufferBytes works.
	BufferBytes int64
	// IdleTimeout closes a client connection that has sent no request and
	// has none outstanding for this long.
	IdleTimeout time.Duration
	// ReadTimeout is how long a client has to send the rest of a frame once
	// its first byte arrived (slowloris).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response to a client; a client that
	// does not read is disconnected, releasing what was buffered for it.
	WriteTimeout time.Duration
	// DialTimeout bounds one upstream dial, DNS included.
	DialTimeout time.Duration
	// UpstreamWriteTimeout bounds writing one request to a broker.
	UpstreamWriteTimeout time.Duration
	// DialBackoffMin and DialBackoffMax bound the wait after a failed dial
	// to one broker before the next attempt (doubling, with jitter);
	// requests to that broker fail fast with a retriable error meanwhile.
	DialBackoffMin, DialBackoffMax time.Duration
	// StartGrace is how long Start waits for every upstream cluster before
	// it listens with the ones that answered (at least one).
	StartGrace time.Duration
	// ProducerIdle, TransactionalIdle and GroupMembershipGrace bound the
	// state kept per client (state_expiry.go).
	ProducerIdle, TransactionalIdle, GroupMembershipGrace time.Duration
}

// withDefaults fills the zero fields with config's defaults: config owns
// the values (and docs/operations.md documents them), so a Server built
// without a config file behaves like one whose file leaves limits out.
func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = config.DefaultMaxConnections
	}
	if l.MaxConnectionsPerIP <= 0 {
		l.MaxConnectionsPerIP = config.DefaultMaxConnectionsPerIP
	}
	if l.BufferBytes <= 0 {
		l.BufferBytes = config.DefaultBufferBytes
	}
	def(&l.IdleTimeout, config.DefaultIdleTimeout)
	def(&l.ReadTimeout, config.DefaultReadTimeout)
	def(&l.WriteTimeout, config.DefaultWriteTimeout)
	def(&l.DialTimeout, config.DefaultDialTimeout)
	def(&l.UpstreamWriteTimeout, config.DefaultUpstreamWriteTimeout)
	def(&l.DialBackoffMin, config.DefaultDialBackoffMin)
	def(&l.DialBackoffMax, config.DefaultDialBackoffMax)
	def(&l.StartGrace, config.DefaultStartGrace)
	def(&l.ProducerIdle, config.DefaultProducerIdle)
	def(&l.TransactionalIdle, config.DefaultTransactionalIdle)
	def(&l.GroupMembershipGrace, config.DefaultGroupMembershipGrace)
	if l.DialBackoffMax < l.DialBackoffMin {
		l.DialBackoffMax = l.DialBackoffMin
	}
	return l
}

// byteBudget is the global budget of buffered bytes. acquire blocks while
// the budget is spent; force charges bytes that already exist (a response
// that arrived) so that readers wait until they are written.
type byteBudget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	max   int64
	used  int64
	peak  int64
	gauge func(float64) // kproxy_buffered_bytes
}

func newByteBudget(max int64, gauge func(float64)) *byteBudget {
	b := &byteBudget{max: max, gauge: gauge}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquire takes n bytes, waiting while the budget is spent. A request larger
// than the whole budget is admitted once nothing else is held, so one
// oversized (but allowed) frame cannot deadlock. It fails when done closes.
func (b *byteBudget) acquire(n int64, done <-chan struct{}) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max && b.used > 0 {
		// Wake this waiter when done closes, so a closed connection does
		// not wait for the budget forever.
		stop := context.AfterFunc(chanContext(done), func() {
			b.mu.Lock()
			b.cond.Broadcast()
			b.mu.Unlock()
		})
		defer stop()
		for b.used+n > b.max && b.used > 0 {
			select {
			case <-done:
				return net.ErrClosed
			default:
			}
			b.cond.Wait()
		}
	}
	b.chargeLocked(n)
	return nil
}

// force charges n bytes without waiting.
func (b *byteBudget) force(n int64) {
	b.mu.Lock()
	b.chargeLocked(n)
	b.mu.Unlock()
}

func (b *byteBudget) chargeLocked(n int64) {
	b.used += n
	if b.used > b.peak {
		b.peak = b.used
	}
	if b.gauge != nil {
		b.gauge(float64(b.used))
	}
}

func (b *byteBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.gauge != nil {
		b.gauge(float64(b.used))
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// inUse and peakUse report the accounting (tests, metrics).
func (b *byteBudget) inUse() int64 { b.mu.Lock(); defer b.mu.Unlock(); return b.used }
func (b *byteBudget) peakUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// chanContext is a context that ends when done closes.
type chanContext <-chan struct{}

func (c chanContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c chanContext) Done() <-chan struct{}       { return c }
func (c chanContext) Value(any) any               { return nil }
func (c chanContext) Err() error {
	select {
	case <-c:
		return context.Canceled
	default:
		return nil
	}
}

// connLimiter counts open client connections, in total and per source IP.
type connLimiter struct {
	mu       sync.Mutex
	max      int
	maxPerIP int
	total    int
	perIP    map[string]int
}

// admit reports whether one more connection from ip may open, and counts it
// when it may; the caller calls leave(ip) when it closes. reason names the
// limit that refused it.
func (l *connLimiter) admit(ip string) (ok bool, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		return false, "total"
	}
	if l.perIP[ip] >= l.maxPerIP {
		return false, "per_ip"
	}
	if l.perIP == nil {
		l.perIP = map[string]int{}
	}
	l.total++
	l.perIP[ip]++
	return true, ""
}

func (l *connLimiter) leave(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// remoteIP is the IP of a connection's peer ("" when it has none).
func remoteIP(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(nc.RemoteAddr().String())
	if err != nil {
		return nc.RemoteAddr().String()
	}
	return host
}
