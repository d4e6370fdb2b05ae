package proxy

import (
	"net"

	"github.com/kproxy/kproxy/internal/lowat"
)

// lowatChunk is the least a client connection's read loop wakes up for
// while a large frame body arrives (SO_RCVLOWAT; less only for the body's
// last bytes), and the most one read of it takes. Without it the read loop
// woke and read whatever had arrived, a loopback segment or less, each read
// followed by an EAGAIN and a goroutine wake-up, and a window-update ACK
// per read whose transmission the kernel runs in the reader's context: the
// read side was 44% of kproxy's samples while a producer sent 1 MiB
// batches, the copy itself a third of that (bench/profiles). The kernel
// caps the mark at half the receive buffer, which it grows to fit.
const lowatChunk = 1 << 20

// lowatMin is the rest of a frame body from which the read loop reads it
// with a low-water mark: below it the mark's two setsockopt calls cost
// more than the wake-ups they save.
const lowatMin = 64 << 10

// newLowatReader returns the reader of frame bodies straight from nc's
// socket, woken only once lowatChunk bytes (or the rest of the body)
// arrived, as the replicator's fetch connection does; nil when nc is not a
// plain TCP connection (a TLS connection's reads go through the TLS layer,
// which a mark above what it buffered could stall). Owned by one read loop.
func newLowatReader(nc net.Conn) *lowat.Reader {
	raw := lowat.RawConn(nc)
	if raw == nil {
		return nil
	}
	return lowat.New(raw, lowatChunk)
}
