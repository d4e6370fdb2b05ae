package proxy

import "github.com/kproxy/kproxy/internal/pipes"

// pipeMax bounds the kernel pipes the proxy has open at once, process-wide:
// what spliced Produce requests (produce_splice.go) and Fetch relays
// (fetch_splice.go) hold in the kernel is at most pipeMax*pipes.Size,
// besides the buffer budget a spliced request is charged to like any frame.
// Whoever finds none takes its buffered path.
const pipeMax = 64

// splicePipes is the proxy's pool of pipes (internal/pipes); the
// replicator has a pool of its own.
var splicePipes = &pipes.Pool{Max: pipeMax}
