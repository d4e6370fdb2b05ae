package main

import (
	"bytes"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/control"
)

// `kproxy SUBCOMMAND -h` and `--help` print the command's usage on stdout
// and succeed; a bad flag still fails with the usage on stderr.
func TestSubcommandHelpExitsZero(t *testing.T) {
	for _, cmd := range []string{"run", "validate", "status", "probe", "verify"} {
		for _, flagName := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			var code int
			out := captureStdout(t, func() error {
				// verify's flag set writes its usage to stderr itself.
				code = run([]string{cmd, flagName}, &stdout, &stderr)
				return nil
			})
			if code != 0 {
				t.Errorf("kproxy %s %s: exit %d, want 0; stderr %q", cmd, flagName, code, stderr.String())
			}
			if strings.Contains(stderr.String(), "help requested") {
				t.Errorf("kproxy %s %s: stderr says %q", cmd, flagName, stderr.String())
			}
			if cmd != "verify" && !strings.Contains(out, "usage: kproxy "+cmd) {
				t.Errorf("kproxy %s %s: stdout lacks the usage:\n%s", cmd, flagName, out)
			}
		}
	}
	var stdout, stderr bytes.Buffer
	captureStdout(t, func() error {
		if code := run([]string{"status", "-bogus"}, &stdout, &stderr); code != 1 {
			t.Errorf("kproxy status -bogus: exit %d, want 1", code)
		}
		return nil
	})
}

func TestVersionFromBuildInfo(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"},
		{Key: "vcs.time", Value: "2026-12-06T22:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	got := formatVersion("", "", info)
	want := "kproxy (devel), commit 0123456789ab-dirty, 2026-12-06T22:00:00Z, go1.26.8"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// -ldflags "-X main.version=... -X main.commit=..." wins over the build info.
	got = formatVersion("v1.2.0", "feedbee", info)
	if !strings.HasPrefix(got, "kproxy v1.2.0, commit feedbee-dirty") {
		t.Errorf("ldflags override: got %q", got)
	}
	if got := formatVersion("", "", nil); got != "kproxy (devel), commit unknown, unknown" {
		t.Errorf("no build info: got %q", got)
	}
	var stdout bytes.Buffer
	if code := run([]string{"--version"}, &stdout, os.Stderr); code != 0 || !strings.HasPrefix(stdout.String(), "kproxy ") {
		t.Errorf("--version: exit %d, %q", code, stdout.String())
	}
}

// States are marked with colour only on a terminal; a pipe or a buffer
// gets the plain word, and the marked column stays aligned.
func TestStatusMarksOnlyOnTerminal(t *testing.T) {
	if markerFor(&bytes.Buffer{}).on {
		t.Error("a buffer is not a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if markerFor(w).on {
		t.Error("a pipe is not a terminal")
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		if !markerFor(tty).on && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb" {
			t.Error("/dev/tty is a terminal")
		}
		tty.Close()
	}
	m := marker{on: true}
	if got := m.state("flipped"); got != green+"✔ flipped"+reset {
		t.Errorf("flipped: %q", got)
	}
	if got := m.state("aborted"); got != red+"✖ aborted"+reset {
		t.Errorf("aborted: %q", got)
	}
	if got := (marker{}).state("draining"); got != "draining" {
		t.Errorf("plain: %q", got)
	}
	// Marked cells all carry the same invisible bytes, so columns line up.
	var b bytes.Buffer
	if err := printCutovers(&b, m, []control.CutoverStatus{{Topic: "a", State: "flipped", Home: "target"}, {Topic: "bb", State: "holding", Home: "source"}}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if col := func(l string) int { return strings.Index(l, "->") }; col(lines[1]) != col(lines[2]) {
		t.Errorf("marked table misaligned:\n%s", b.String())
	}
}

func TestCatchUpCell(t *testing.T) {
	for ms, want := range map[int64]string{0: "caught up", -1: "not catching up", 95_400: "in 1m35s"} {
		if got := catchUp(ms); got != want {
			t.Errorf("catchUp(%d) = %q, want %q", ms, got, want)
		}
	}
}
