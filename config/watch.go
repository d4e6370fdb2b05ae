package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// debounceDelay is how long the watcher waits after the last event for the
// config file before it reloads. One save is a burst of events (an editor's
// write, rename and chmod; Kubernetes' create, rename and remove), and
// reloading half-way through a burst would read a file that is still being
// replaced. Each event restarts the wait.
const debounceDelay = 100 * time.Millisecond

// ReloadStatus reports how reloading has gone, for /status and metrics.
type ReloadStatus struct {
	// Generation counts configs applied since start: 0 is the config the
	// Reloader started with.
	Generation int64
	// LastOK is when the running config was loaded or last applied.
	LastOK time.Time
	// LastError says why the newest file content was rejected or refused;
	// "" when the running config matches the file.
	LastError string
	// Refused lists the keys of the newest file content that need a
	// restart, when apply refused it for them (a *RestartError); nil
	// otherwise.
	Refused []string
}

// RestartError is what an apply function returns when it refuses a config
// because settings changed that only a restart can apply. Lines is
// RestartRequired's answer: one line per setting, each starting with its
// key.
type RestartError struct{ Lines []string }

func (e *RestartError) Error() string {
	return "these settings need a restart: " + strings.Join(e.Lines, "; ")
}

// Reloader re-reads one config file and hands each new valid config to apply.
// Reload may be called from any goroutine (a SIGHUP handler, an admin
// endpoint); Run calls it on file changes. Reloads never overlap, and apply
// runs in the goroutine that called Reload, so it must not call Reload itself.
type Reloader struct {
	path  string
	log   hclog.Logger
	apply func(*Config) error

	mu          sync.Mutex // serializes Reload; guards the fields below
	runningHash string     // content hash of the config last applied (or started with)
	seenHash    string     // content hash of the file when last read, valid or not
	generation  int64
	lastOK      time.Time

	status atomic.Pointer[ReloadStatus] // the latest status, read by Status without mu
}

// NewReloader returns a Reloader for the file at path. running is the config
// the caller is serving (from Load); a file whose content hash equals
// running.Hash() is not applied again. With a nil running, the first valid
// content Reload sees is applied. A nil log discards logs.
//
// apply installs a config or refuses it with an error (a *RestartError
// when settings changed that need a restart): a refused config is not
// counted as applied, the running one stays, and Status says why.
func NewReloader(path string, running *Config, log hclog.Logger, apply func(*Config) error) *Reloader {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &Reloader{path: path, log: log, apply: apply}
	if running != nil {
		r.runningHash = running.Hash()
		r.lastOK = time.Now()
	}
	r.setStatus("")
	return r
}

// Status returns the current reload status.
func (r *Reloader) Status() ReloadStatus { return *r.status.Load() }

func (r *Reloader) setStatus(lastError string) {
	r.setStatusRefused(lastError, nil)
}

func (r *Reloader) setStatusRefused(lastError string, refused []string) {
	r.status.Store(&ReloadStatus{Generation: r.generation, LastOK: r.lastOK, LastError: lastError, Refused: refused})
}

// Reload reads the file and, when its content is new and valid, calls apply
// with it. Content identical to the last read is skipped. A file that cannot
// be read, parsed or validated is logged with every problem and not applied;
// the returned error is the same, for callers that report it elsewhere.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()

	data, err := os.ReadFile(r.path)
	if err != nil {
		r.seenHash = "" // read again on the next event, whatever the content
		return r.reject(fmt.Errorf("read config: %w", err))
	}
	h := hashBytes(data)
	if h == r.seenHash {
		return nil
	}
	r.seenHash = h
	if h == r.runningHash {
		// Back to what is running, say after a bad edit was reverted.
		if r.Status().LastError != "" {
			r.log.Info("config file matches the running config again", "path", r.path)
		}
		r.setStatus("")
		return nil
	}
	cfg, err := Parse(data)
	if err != nil {
		return r.reject(err)
	}
	if err := r.apply(cfg); err != nil {
		// Refused: the running config stays, and so does its hash, so
		// that reverting the file clears the error. The same content is
		// not offered again until the file changes.
		var re *RestartError
		if errors.As(err, &re) {
			r.log.Error("config reload refused; keeping the running config until a restart", "path", r.path, "restart_required", re.Lines)
			r.setStatusRefused(err.Error(), re.Lines)
			return err
		}
		return r.reject(err)
	}
	r.runningHash = h
	r.generation++
	r.lastOK = time.Now()
	r.setStatus("")
	return nil
}

func (r *Reloader) reject(err error) error {
	r.log.Error("config reload rejected; keeping the last good config", "path", r.path, "error", err)
	r.setStatus(err.Error())
	return err
}

// Run watches the file and reloads it after each change (see Reload) until
// ctx is done; it then returns nil. It returns an error only when the watch
// cannot be set up. It reloads once right after the watch is in place, so a
// change made between the caller's Load and Run is not missed.
//
// Run watches the file's directory, not the file: editors save by writing a
// temporary file and renaming it over the old one, and Kubernetes updates a
// mounted ConfigMap by swapping the ..data symlink that the file resolves
// through, neither of which a watch on the old file would see. It therefore
// also reloads when the path starts resolving to a different file, and
// watches the resolved file's own directory when that is elsewhere.
func (r *Reloader) Run(ctx context.Context) error {
	abs, err := filepath.Abs(r.path)
	if err != nil {
		return fmt.Errorf("watch config %s: %w", r.path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config %s: %w", r.path, err)
	}
	defer w.Close()
	dir := filepath.Dir(abs)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch config directory %s: %w", dir, err)
	}
	rw := &resolvedWatch{w: w, path: abs, home: dir}
	rw.update()
	_ = r.Reload() // rejections are logged by Reload

	debounce := time.NewTimer(debounceDelay)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("config file watcher stopped unexpectedly")
			}
			if rw.relevant(ev) {
				debounce.Reset(debounceDelay)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("config file watcher stopped unexpectedly")
			}
			r.log.Warn("config file watcher error; a change may go unnoticed until the file changes again", "path", r.path, "error", err)
		case <-debounce.C:
			rw.update()
			_ = r.Reload()
		}
	}
}

// Watch watches the config file at path and calls apply with each new valid
// config until ctx is done (see Reloader.Run). Because Watch does not know the
// config the caller is running, apply is first called with the file's current
// content; a caller that holds the running config should use
// NewReloader(path, running, log, apply).Run(ctx), which skips that call.
func Watch(ctx context.Context, path string, log hclog.Logger, apply func(*Config) error) error {
	return NewReloader(path, nil, log, apply).Run(ctx)
}

// resolvedWatch tracks where the config path resolves through symlinks, and
// keeps a watch on that file's directory when it is not the config path's own.
type resolvedWatch struct {
	w        *fsnotify.Watcher
	path     string // the config path, absolute
	home     string // its directory, always watched
	resolved string // path with symlinks resolved at the last update; "" if missing
	extra    string // the watched directory of resolved, if not home
}

// update re-resolves the path and moves the extra watch to follow it.
func (rw *resolvedWatch) update() {
	rw.resolved, _ = filepath.EvalSymlinks(rw.path)
	var want string
	if rw.resolved != "" {
		want = filepath.Dir(rw.resolved)
		// home may itself contain symlinks; watching the same directory twice
		// under two names would confuse the inotify backend.
		if h, err := filepath.EvalSymlinks(rw.home); want == rw.home || (err == nil && h == want) {
			want = ""
		}
	}
	if want == rw.extra {
		return
	}
	if rw.extra != "" {
		// Kubernetes deletes the old ..<timestamp> directory, which removes
		// its watch, so an error here is expected and harmless.
		_ = rw.w.Remove(rw.extra)
	}
	rw.extra = ""
	if want != "" && rw.w.Add(want) == nil {
		rw.extra = want
	}
}

// relevant reports whether ev may have changed the config file's content.
func (rw *resolvedWatch) relevant(ev fsnotify.Event) bool {
	if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Remove|fsnotify.Rename) == 0 {
		return false // chmod (editors touch modes when saving) never changes content
	}
	if name := filepath.Clean(ev.Name); name == rw.path || name == rw.resolved {
		return true
	}
	// Another name in a watched directory: relevant only if the config path
	// now resolves elsewhere (a symlink in its chain was swapped).
	now, _ := filepath.EvalSymlinks(rw.path)
	return now != rw.resolved
}
