// Package faults is a TCP proxy for tests that puts network faults between a
// client (kproxy) and one Kafka broker: added latency, a bandwidth cap, a
// blackhole (connections are accepted, nothing is forwarded until it heals),
// resets (RST on every open connection) and half-open connections (one
// direction stops being read, so the sender's window fills).
//
// The broker must advertise the proxy's address, or a client bootstrapped on
// the proxy would learn the broker's own address from Metadata and go round
// it: test/kafka/kafka.sh gives every broker a FAULT listener whose
// advertised port is where the tests run this proxy.
package faults

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction names one half of a proxied connection.
type Direction int

const (
	// ToServer is client -> broker (requests).
	ToServer Direction = iota
	// ToClient is broker -> client (responses).
	ToClient
)

// Proxy forwards every connection accepted on its address to upstream,
// applying the faults set at the moment each chunk passes.
type Proxy struct {
	ln       net.Listener
	upstream string

	latency   atomic.Int64 // nanoseconds added to each chunk, each direction
	bandwidth atomic.Int64 // bytes per second per connection and direction; 0: no cap
	blackhole atomic.Bool
	stalled   [2]atomic.Bool // half-open: this direction is not read

	mu     sync.Mutex
	conns  map[*pair]struct{}
	closed bool
	wg     sync.WaitGroup

	accepted, resets atomic.Int64
}

type pair struct{ client, server *net.TCPConn }

// poll is how often a paused pump looks at the faults again.
const poll = 5 * time.Millisecond

// Listen starts a proxy on listen (host:port; port 0 picks one) in front of
// upstream.
func Listen(listen, upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency delays every chunk by d in each direction (0 removes it).
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// SetBandwidth caps each connection's direction at bytesPerSec (0: no cap).
func (p *Proxy) SetBandwidth(bytesPerSec int64) { p.bandwidth.Store(bytesPerSec) }

// Blackhole stops (on) or resumes (off) forwarding. Connections are still
// accepted, but nothing reaches the other side, the way a network partition
// that drops packets looks to both ends; what was sent in the meantime flows
// once it heals, as TCP's retransmissions would deliver it.
func (p *Proxy) Blackhole(on bool) { p.blackhole.Store(on) }

// HalfOpen stops (on) or resumes (off) reading direction dir: its sender's
// writes succeed until the socket buffers fill, then block.
func (p *Proxy) HalfOpen(dir Direction, on bool) { p.stalled[dir].Store(on) }

// Heal removes every fault.
func (p *Proxy) Heal() {
	p.SetLatency(0)
	p.SetBandwidth(0)
	p.Blackhole(false)
	p.HalfOpen(ToServer, false)
	p.HalfOpen(ToClient, false)
}

// Reset closes every open connection with an RST on both sides (SO_LINGER 0)
// and returns how many it reset. New connections are accepted as before.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	ps := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		ps = append(ps, c)
		delete(p.conns, c)
	}
	p.mu.Unlock()
	for _, c := range ps {
		rst(c.client)
		rst(c.server)
	}
	p.resets.Add(int64(len(ps)))
	return len(ps)
}

// Stats are the connections accepted and reset so far.
func (p *Proxy) Stats() (accepted, resets int64) { return p.accepted.Load(), p.resets.Load() }

// Open is the number of connections currently proxied.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops accepting, closes every connection and waits for the pumps.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Heal()
	p.Reset()
	p.wg.Wait()
	return err
}

func rst(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

// serve dials upstream for one client connection (once any blackhole has
// healed: a blackholed SYN gets no answer) and starts the two pumps.
func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	for p.blackhole.Load() {
		if p.isClosed() {
			_ = client.Close()
			return
		}
		time.Sleep(poll)
	}
	up, err := net.DialTimeout("tcp", p.upstream, 10*time.Second)
	if err != nil {
		// The broker is down: the client sees its connection refused, as
		// it would dialing the broker itself.
		rst(client)
		return
	}
	pr := &pair{client: client, server: up.(*net.TCPConn)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		rst(client)
		rst(pr.server)
		return
	}
	p.conns[pr] = struct{}{}
	p.mu.Unlock()
	var done sync.WaitGroup
	done.Add(2)
	p.wg.Add(2)
	go func() { defer p.wg.Done(); defer done.Done(); p.pump(pr.client, pr.server, ToServer) }()
	go func() { defer p.wg.Done(); defer done.Done(); p.pump(pr.server, pr.client, ToClient) }()
	done.Wait()
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

type chunk struct {
	b  []byte
	at time.Time // when it was read; it is written at at+latency
}

// pump copies src to dst through a queue, so latency delays each chunk
// without slowing the reads behind it (a long pipe, not a slow one).
func (p *Proxy) pump(src, dst *net.TCPConn, dir Direction) {
	q := make(chan chunk, 64)
	var rerr error
	go func() {
		defer close(q)
		for {
			for p.stalled[dir].Load() {
				if p.isClosed() {
					return
				}
				time.Sleep(poll)
			}
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				rerr = err
				return
			}
		}
	}()
	var werr error
	for c := range q {
		if werr != nil {
			continue // drain, so the reader can finish
		}
		if d := time.Until(c.at.Add(time.Duration(p.latency.Load()))); d > 0 {
			time.Sleep(d)
		}
		// A read already waiting when the direction stalled returns one
		// more chunk: it is held here, not delivered.
		for (p.blackhole.Load() || p.stalled[dir].Load()) && !p.isClosed() {
			time.Sleep(poll)
		}
		b := c.b
		for len(b) > 0 && werr == nil {
			n := len(b)
			if bw := p.bandwidth.Load(); bw > 0 {
				// Slices of at most 1/20 s of the cap, each followed by its
				// share of time.
				if max := int(bw / 20); max > 0 && n > max {
					n = max
				}
				time.Sleep(time.Duration(int64(n) * int64(time.Second) / bw))
			}
			_, werr = dst.Write(b[:n])
			b = b[n:]
		}
	}
	// rerr is set before q is closed. A clean end (EOF) is passed on as a
	// half close; anything else (a reset, a write error) ends both sides.
	if werr == nil && errors.Is(rerr, io.EOF) {
		_ = dst.CloseWrite()
		_ = src.CloseRead()
		return
	}
	_ = src.Close()
	_ = dst.Close()
}
