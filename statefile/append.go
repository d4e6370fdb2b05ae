package statefile

import (
	"fmt"
	"os"
	"sync"
)

// AppendFile is an append-only file of lines (ReadLines reads it back).
// Each Append writes one line and its newline in one write and fsyncs it.
// A failed Append (a full disk) cuts the file back to where it was, so the
// partial line it may have left is not followed by the next one: at the
// next start it would be an unreadable line in the middle, not a torn last
// line, and stop start-up. If the cut fails too the file takes no more
// appends.
type AppendFile struct {
	mu     sync.Mutex // guards f, size, broken
	f      *os.File
	path   string
	size   int64
	broken error
}

// OpenAppend opens (creating with perm) the append-only file at path.
func OpenAppend(path string, perm os.FileMode) (*AppendFile, error) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, perm)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &AppendFile{f: f, path: path, size: st.Size()}, nil
}

// Append writes line (which must not contain a newline) and a newline, and
// syncs the file.
func (a *AppendFile) Append(line []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.broken != nil {
		return a.broken
	}
	b := append(line[:len(line):len(line)], '\n')
	err := writeHook(a.f, b)
	if err == nil {
		err = a.f.Sync()
	}
	if err == nil {
		a.size += int64(len(b))
		return nil
	}
	err = fmt.Errorf("appending to %s: %w", a.path, err)
	if terr := a.f.Truncate(a.size); terr != nil {
		a.broken = fmt.Errorf("%s takes no more appends: a failed append could not be cut back (%v) after: %w", a.path, terr, err)
	}
	return err
}

// Close closes the file.
func (a *AppendFile) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Close()
}
