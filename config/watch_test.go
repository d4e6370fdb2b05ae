package config

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// waitLimit bounds every wait for an expected event. Tests never assert that
// something happened quickly, only that it happened within this generous limit.
const waitLimit = 5 * time.Second

// lockedBuffer is a bytes.Buffer safe for the watcher's logger to write while
// the test reads.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// watchHarness is one config file, a logger writing to a buffer, and a channel
// receiving every applied config.
type watchHarness struct {
	t       *testing.T
	dir     string
	path    string
	logs    *lockedBuffer
	log     hclog.Logger
	applied chan *Config
}

func newWatchHarness(t *testing.T) *watchHarness {
	t.Helper()
	dir := t.TempDir()
	logs := &lockedBuffer{}
	return &watchHarness{
		t:       t,
		dir:     dir,
		path:    filepath.Join(dir, "kproxy.yaml"),
		logs:    logs,
		log:     hclog.New(&hclog.LoggerOptions{Name: "config", Output: logs, Level: hclog.Trace}),
		applied: make(chan *Config, 16),
	}
}

func (h *watchHarness) apply(c *Config) error { h.applied <- c; return nil }

// configWith returns a valid config whose listen port identifies it.
func configWith(port string) string {
	return strings.Replace(minimal, "127.0.0.1:9092", "127.0.0.1:"+port, 1)
}

func (h *watchHarness) write(path, content string) {
	h.t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// run starts Watch in the background and stops it when the test ends.
func (h *watchHarness) run() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, h.path, h.log, h.apply) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Watch returned %v", err)
			}
		case <-time.After(waitLimit):
			h.t.Error("Watch did not return after its context was cancelled")
		}
	})
}

// expectApplied waits for the next applied config and checks its listen port.
func (h *watchHarness) expectApplied(port string) {
	h.t.Helper()
	select {
	case c := <-h.applied:
		if want := "127.0.0.1:" + port; c.Listen != want {
			h.t.Fatalf("applied config listens on %s, want %s", c.Listen, want)
		}
	case <-time.After(waitLimit):
		h.t.Fatalf("no config applied within %s (want port %s); logs:\n%s", waitLimit, port, h.logs)
	}
}

// expectLog waits until the logs contain s.
func (h *watchHarness) expectLog(s string) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(h.logs.String(), s) {
		if time.Now().After(deadline) {
			h.t.Fatalf("logs never contained %q; logs:\n%s", s, h.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// start writes the first config, starts Watch and waits for Watch's initial
// apply, which also proves the directory watch is in place.
func (h *watchHarness) start() {
	h.t.Helper()
	h.write(h.path, configWith("1001"))
	h.run()
	h.expectApplied("1001")
}

func TestWatchAppliesAnEditedFile(t *testing.T) {
	t.Parallel()
	h := newWatchHarness(t)
	h.start()
	h.write(h.path, configWith("1002"))
	h.expectApplied("1002")
}

func TestWatchRejectsAnInvalidFileAndKeepsWatching(t *testing.T) {
	t.Parallel()
	h := newWatchHarness(t)
	h.start()
	h.write(h.path, configWith("1002")+"  topics: { payments: { fetch: tagret } }\n")
	h.expectLog("config reload rejected; keeping the last good config")
	h.expectLog(`routes.topics.payments.fetch (line 8): unknown cluster \"tagret\"`)
	// The next good file is the next config applied: the bad one never was.
	h.write(h.path, configWith("1003"))
	h.expectApplied("1003")
}

func TestWatchAppliesAFileRenamedOverTheConfig(t *testing.T) {
	t.Parallel()
	h := newWatchHarness(t)
	h.start()
	tmp := filepath.Join(h.dir, ".kproxy.yaml.swp")
	h.write(tmp, configWith("1002"))
	if err := os.Rename(tmp, h.path); err != nil {
		t.Fatal(err)
	}
	h.expectApplied("1002")
}

// TestWatchFollowsAKubernetesSymlinkSwap mimics how the kubelet updates a
// mounted ConfigMap: kproxy.yaml -> ..data/kproxy.yaml, ..data -> ..<ts>;
// an update writes a new ..<ts> directory and renames a new ..data symlink
// over the old one. No event ever names kproxy.yaml.
func TestWatchFollowsAKubernetesSymlinkSwap(t *testing.T) {
	t.Parallel()
	h := newWatchHarness(t)
	mkdir := func(name, content string) {
		if err := os.Mkdir(filepath.Join(h.dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		h.write(filepath.Join(h.dir, name, "kproxy.yaml"), content)
	}
	mkdir("..2024_01_01_00_00_00.1", configWith("1001"))
	if err := os.Symlink("..2024_01_01_00_00_00.1", filepath.Join(h.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "kproxy.yaml"), h.path); err != nil {
		t.Fatal(err)
	}
	h.run()
	h.expectApplied("1001")

	mkdir("..2024_01_01_00_01_00.2", configWith("1002"))
	if err := os.Symlink("..2024_01_01_00_01_00.2", filepath.Join(h.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(h.dir, "..data_tmp"), filepath.Join(h.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h.dir, "..2024_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	h.expectApplied("1002")
}

func TestWatchSeesEditsToASymlinkTargetInAnotherDirectory(t *testing.T) {
	t.Parallel()
	h := newWatchHarness(t)
	real := filepath.Join(t.TempDir(), "real.yaml")
	h.write(real, configWith("1001"))
	if err := os.Symlink(real, h.path); err != nil {
		t.Fatal(err)
	}
	h.run()
	h.expectApplied("1001")
	h.write(real, configWith("1002"))
	h.expectApplied("1002")
}

func TestReloaderRunSkipsTheConfigItStartedWith(t *testing.T) {
	t.Parallel()
	h := newWatchHarness(t)
	h.write(h.path, configWith("1001"))
	running, err := Load(h.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewReloader(h.path, running, h.log, h.apply).Run(ctx) }()
	h.write(h.path, configWith("1002"))
	h.expectApplied("1002") // not 1001: the running config is never applied again
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

func TestRunFailsWhenTheDirectoryIsMissing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "missing", "kproxy.yaml")
	err := Watch(context.Background(), path, nil, func(*Config) error { t.Error("applied"); return nil })
	if err == nil || !strings.Contains(err.Error(), "watch config directory") {
		t.Errorf("Watch = %v, want a watch config directory error", err)
	}
}

// TestReload drives Reloader.Reload directly, one step after another, so the
// decisions need no watcher and no waiting.
func TestReload(t *testing.T) {
	t.Parallel()
	type step struct {
		write     string // new file content; "-" removes the file; "" leaves it
		applied   string // listen port of the config applied by this step; "" for none
		wantErr   bool
		lastError bool // Status().LastError is set afterwards
		gen       int64
	}
	bad := configWith("1009") + "  topics: { orders: nowhere }\n"
	tests := []struct {
		name  string
		steps []step
	}{
		{"the running config is not applied again", []step{
			{write: configWith("1001")},
		}},
		{"new content is applied once", []step{
			{write: configWith("1002"), applied: "1002", gen: 1},
			{gen: 1},
			{write: configWith("1002"), gen: 1},
		}},
		{"an invalid file is rejected and not retried until it changes", []step{
			{write: bad, wantErr: true, lastError: true},
			{lastError: true},
			{write: configWith("1003"), applied: "1003", gen: 1},
		}},
		{"reverting a bad edit clears the error without applying", []step{
			{write: bad, wantErr: true, lastError: true},
			{write: configWith("1001")},
		}},
		{"a missing file is an error and is read again next time", []step{
			{write: "-", wantErr: true, lastError: true},
			{write: configWith("1001")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newWatchHarness(t)
			h.write(h.path, configWith("1001"))
			running, err := Load(h.path)
			if err != nil {
				t.Fatal(err)
			}
			r := NewReloader(h.path, running, h.log, h.apply)
			for i, s := range tt.steps {
				switch s.write {
				case "":
				case "-":
					if err := os.Remove(h.path); err != nil {
						t.Fatal(err)
					}
				default:
					h.write(h.path, s.write)
				}
				err := r.Reload()
				if (err != nil) != s.wantErr {
					t.Errorf("step %d: Reload() = %v, want error %v", i, err, s.wantErr)
				}
				select {
				case c := <-h.applied:
					if s.applied == "" || c.Listen != "127.0.0.1:"+s.applied {
						t.Errorf("step %d: applied %s, want %q", i, c.Listen, s.applied)
					}
				default:
					if s.applied != "" {
						t.Errorf("step %d: nothing applied, want %s", i, s.applied)
					}
				}
				st := r.Status()
				if (st.LastError != "") != s.lastError || st.Generation != s.gen || st.LastOK.IsZero() {
					t.Errorf("step %d: Status() = %+v, want error %v, generation %d, LastOK set", i, st, s.lastError, s.gen)
				}
			}
			if strings.Contains(tt.name, "rejected") {
				if n := strings.Count(h.logs.String(), "config reload rejected"); n != 1 {
					t.Errorf("logged %d rejections, want 1; logs:\n%s", n, h.logs)
				}
			}
		})
	}
}

func TestEventRelevance(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "kproxy.yaml")
	if err := os.WriteFile(path, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	rw := &resolvedWatch{path: path, home: dir}
	rw.resolved, _ = filepath.EvalSymlinks(path)
	tests := []struct {
		name string
		ev   fsnotify.Event
		want bool
	}{
		{"a write to the config is relevant", fsnotify.Event{Name: path, Op: fsnotify.Write}, true},
		{"a rename onto the config is relevant", fsnotify.Event{Name: path, Op: fsnotify.Create}, true},
		{"removing the config is relevant", fsnotify.Event{Name: path, Op: fsnotify.Remove}, true},
		{"a chmod of the config is not", fsnotify.Event{Name: path, Op: fsnotify.Chmod}, false},
		{"a write to a neighbour is not", fsnotify.Event{Name: filepath.Join(dir, "other.yaml"), Op: fsnotify.Write}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := rw.relevant(tt.ev); got != tt.want {
				t.Errorf("relevant(%v) = %v, want %v", tt.ev, got, tt.want)
			}
		})
	}
}

// TestReloadRefusedByApplyIsNotApplied: when apply refuses a config for
// settings that need a restart, the Reloader used to count it as applied
// (generation up, no error, the file's content taken as running), so
// /status showed a config that was not running.
func TestReloadRefusedByApplyIsNotApplied(t *testing.T) {
	t.Parallel()
	h := newWatchHarness(t)
	h.write(h.path, configWith("1001"))
	running, err := Load(h.path)
	if err != nil {
		t.Fatal(err)
	}
	var applied []string
	r := NewReloader(h.path, running, h.log, func(c *Config) error {
		if lines := RestartRequired(running, c); len(lines) > 0 {
			return &RestartError{Lines: lines}
		}
		applied = append(applied, string(c.Routes.Default))
		running = c
		return nil
	})

	// A bootstrap edit: refused, with the key named.
	edited := strings.Replace(configWith("1001"), "[127.0.0.1:29092]", "[127.0.0.1:39092]", 1)
	h.write(h.path, edited)
	err = r.Reload()
	var re *RestartError
	if !errors.As(err, &re) {
		t.Fatalf("Reload() = %v, want a *RestartError", err)
	}
	st := r.Status()
	want := []string{"clusters.target.bootstrap: [127.0.0.1:29092]→[127.0.0.1:39092] (takes effect after a restart)"}
	if st.Generation != 0 || !reflect.DeepEqual(st.Refused, want) || !strings.Contains(st.LastError, "clusters.target.bootstrap") {
		t.Errorf("after a refused reload Status() = %+v, want generation 0, refused %q", st, want)
	}
	if !strings.Contains(h.logs.String(), "config reload refused") {
		t.Errorf("no refusal logged:\n%s", h.logs)
	}

	// Reverting the file clears the refusal without applying anything.
	h.write(h.path, configWith("1001"))
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload() after revert = %v", err)
	}
	if st := r.Status(); st.Generation != 0 || st.LastError != "" || st.Refused != nil {
		t.Errorf("after reverting Status() = %+v, want generation 0 and no error", st)
	}

	// A live edit is applied and counted.
	h.write(h.path, strings.Replace(configWith("1001"), "default: source", "default: target", 1))
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload() of a live edit = %v", err)
	}
	if st := r.Status(); st.Generation != 1 || st.LastError != "" || !reflect.DeepEqual(applied, []string{"target"}) {
		t.Errorf("after a live edit Status() = %+v, applied %q; want generation 1, applied [target]", st, applied)
	}
}
