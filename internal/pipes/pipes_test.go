package pipes

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Bytes go socket -> pipes -> socket in order (a body larger than a pipe
// holds continues in the next: ErrFull), a dropped stretch (Discard) never
// arrives, and the pool bounds the pipes out and takes back only empty
// ones.
func TestSpliceThroughPipesAndDiscard(t *testing.T) {
	w, in := tcpPair(t)
	out, r := tcpPair(t)
	body := make([]byte, 3<<20)
	for i := range body {
		body[i] = byte(rand.Uint32())
	}
	go func() {
		w.Write([]byte("drop me"))
		w.Write(body)
	}()
	pool := &Pool{Max: 8}
	sin, sout := NewSplicer(in), NewSplicer(out)
	if sin == nil || sout == nil {
		t.Fatal("no splicer for a TCP connection")
	}
	if err := sin.Discard(len("drop me")); err != nil {
		t.Fatal(err)
	}
	var chain []*Pipe
	for want := len(body); want > 0; {
		p := pool.Get()
		if p == nil {
			t.Fatalf("no pipe with %d pipes out", pool.InUse())
		}
		got, err := sin.In(p, want)
		want -= got
		chain = append(chain, p)
		if err != nil && !errors.Is(err, ErrFull) {
			t.Fatal(err)
		}
	}
	// (How many pipes 3 MiB take depends on the kernel: a pipe's slots
	// hold socket pages, which may be larger than 4 KiB.)
	done := make(chan []byte)
	go func() {
		b := make([]byte, len(body)+5)
		_, err := io.ReadFull(r, b)
		if err != nil {
			t.Error(err)
		}
		done <- b
	}()
	if err := sout.SendMore([]byte("head:")); err != nil {
		t.Fatal(err)
	}
	for i, p := range chain {
		if err := sout.Out(p, p.N, i < len(chain)-1); err != nil {
			t.Fatal(err)
		}
		pool.Put(p)
	}
	if got := <-done; string(got[:5]) != "head:" || !bytes.Equal(got[5:], body) {
		t.Fatal("bytes out differ from bytes in")
	}
	if n := pool.InUse(); n != 0 {
		t.Fatalf("%d pipes out after every one was put back", n)
	}
	// A pipe put back with bytes in it is closed, not pooled.
	p := pool.Get()
	go w.Write([]byte("left"))
	if _, err := sin.In(p, 4); err != nil {
		t.Fatal(err)
	}
	pool.Put(p)
	if len(pool.idle) != len(chain)-1 || pool.open != len(chain)-1 {
		t.Fatalf("after putting back a pipe with bytes: %d idle, %d open, want %d", len(pool.idle), pool.open, len(chain)-1)
	}
}

// A full pool hands out nothing: the caller takes its buffered path.
func TestPoolBound(t *testing.T) {
	pool := &Pool{Max: 2}
	a, b := pool.Get(), pool.Get()
	if a == nil || b == nil || pool.Get() != nil {
		t.Fatal("a pool of 2 did not hand out exactly 2 pipes")
	}
	pool.Put(a)
	if pool.Get() != a {
		t.Fatal("an empty pipe put back is not reused")
	}
	pool.Put(a)
	pool.Close()
	pool.Put(b)
	if pool.open != 0 || len(pool.idle) != 0 || pool.Get() != nil {
		t.Fatalf("after Close: %d open, %d idle", pool.open, len(pool.idle))
	}
}
