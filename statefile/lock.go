package statefile

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the lock's name in a state directory.
const LockFile = "LOCK"

// Lock is the exclusive ownership of a state directory, held until Release
// or until the process ends (the kernel drops a flock with its holder, so a
// crash never leaves a stale lock).
type Lock struct {
	f *os.File
}

// HeldError says a state directory is owned by another process.
type HeldError struct {
	Dir  string
	PID  int    // 0 if the holder has not recorded it yet
	Host string // "" if the holder has not recorded it yet
}

func (e *HeldError) Error() string {
	who := "another process (it has not recorded its pid yet)"
	if e.PID != 0 {
		who = fmt.Sprintf("pid %d on host %s", e.PID, e.Host)
	}
	return fmt.Sprintf("state_dir %s is in use by %s: two kproxy processes on one state_dir would both copy the same data and write the same files; stop that one first, or give this one its own state_dir", e.Dir, who)
}

// LockDir creates dir if needed and takes an exclusive flock on dir/LOCK,
// recording this process's pid and host name in it. If another process (or
// another LockDir in this one) holds it, LockDir returns a *HeldError naming
// the holder.
func LockDir(dir string) (*Lock, error) {
	if err := MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			held := &HeldError{Dir: dir}
			held.PID, held.Host = readHolder(path)
			return nil, held
		}
		return nil, fmt.Errorf("state_dir %s: locking %s: %w", dir, path, err)
	}
	host, _ := os.Hostname()
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(fmt.Appendf(nil, "pid %d\nhost %s\n", os.Getpid(), host), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("state_dir %s: recording the lock holder in %s: %w", dir, path, err)
	}
	return &Lock{f: f}, nil
}

// Release gives the directory up. A nil Lock releases nothing.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}

// readHolder reads the pid and host a holder recorded.
func readHolder(path string) (pid int, host string) {
	f, err := os.Open(path)
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "pid":
			pid, _ = strconv.Atoi(v)
		case "host":
			host = v
		}
	}
	return pid, host
}
