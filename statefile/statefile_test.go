package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteAtomicReplacesAndLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "marker.json")
	for _, v := range []string{"one", "two"} {
		if err := WriteAtomic(path, []byte(v), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != v {
			t.Fatalf("read %q, %v; want %q", b, err, v)
		}
	}
	if got := names(t, dir); len(got) != 1 || got[0] != "marker.json" {
		t.Fatalf("directory holds %v, want only marker.json", got)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", st.Mode().Perm())
	}
}

// A write that fails part way (a full disk) returns the error and leaves the
// old file whole and no temporary file behind.
func TestWriteAtomicFailedWriteKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "group-homes.json")
	if err := WriteAtomic(path, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func(h func(*os.File, []byte) error) { writeHook = h }(writeHook)
	writeHook = func(f *os.File, data []byte) error {
		if _, err := f.Write(data[:len(data)/2]); err != nil {
			return err
		}
		return syscall.ENOSPC
	}
	err := WriteAtomic(path, []byte("new content, longer than the old"), 0o644)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v: want ENOSPC naming %s", err, path)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "old content" {
		t.Fatalf("after the failed write the file holds %q (%v)", b, err)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Fatalf("directory holds %v, want only the old file", got)
	}
}

// A read-only directory: the write fails and the old file stays. Root
// ignores directory permissions, so there the test cannot inject the
// failure this way (the ENOSPC test above covers the same path).
func TestWriteAtomicReadOnlyDirKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "topic-ids.json")
	if err := WriteAtomic(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o755)
	if f, err := os.CreateTemp(dir, "probe"); err == nil {
		f.Close()
		os.Remove(f.Name())
		t.Skip("directory permissions do not stop this user (root): see TestWriteAtomicFailedWriteKeepsTheOldFile")
	}
	if err := WriteAtomic(path, []byte("new"), 0o644); err == nil {
		t.Fatal("write into a read-only directory succeeded")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "old" {
		t.Fatalf("file holds %q (%v)", b, err)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Fatalf("directory holds %v", got)
	}
}

func TestWriteAtomicMissingDirFails(t *testing.T) {
	// A path under a regular file: fails for every user, root included.
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(filepath.Join(blocker, "x.json"), []byte("x"), 0o644); err == nil {
		t.Fatal("write under a regular file succeeded")
	}
}

// flock belongs to the open file description, so a second LockDir in the
// same process (a second descriptor) is refused just like another process.
func TestLockDirRefusesASecondHolderAndNamesTheFirst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second LockDir: %v, want a *HeldError", err)
	}
	host, _ := os.Hostname()
	if held.PID != os.Getpid() || held.Host != host {
		t.Fatalf("holder pid %d host %q, want %d %q", held.PID, held.Host, os.Getpid(), host)
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("pid %d on host %s", os.Getpid(), host)) || !strings.Contains(msg, dir) {
		t.Fatalf("message does not name the holder and dir: %s", msg)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	second, err := LockDir(dir)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	second.Release()
}

func TestReadLinesForgivesOnlyATornLastLine(t *testing.T) {
	decode := func(got *[]int) func([]byte) error {
		return func(b []byte) error {
			var v int
			if err := json.Unmarshal(b, &v); err != nil {
				return err
			}
			*got = append(*got, v)
			return nil
		}
	}
	for _, tc := range []struct {
		name, content string
		want          []int
		torn, badLine int
	}{
		{name: "whole", content: "1\n2\n3\n", want: []int{1, 2, 3}},
		{name: "last line whole without newline", content: "1\n2\n3", want: []int{1, 2, 3}},
		{name: "torn last line", content: "1\n2\n[3", want: []int{1, 2}, torn: 3},
		{name: "bad line in the middle", content: "1\n[2\n3\n", badLine: 2},
		{name: "bad last line with its newline", content: "1\n2\n[3\n", badLine: 3},
		{name: "empty", content: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.jsonl")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			var got []int
			torn, err := ReadLines(path, decode(&got))
			if tc.badLine != 0 {
				var le *LineError
				if !errors.As(err, &le) || le.Line != tc.badLine || le.Path != path {
					t.Fatalf("error %v, want a LineError at %s line %d", err, path, tc.badLine)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%s line %d", path, tc.badLine)) {
					t.Fatalf("message does not name file and line: %s", err)
				}
				return
			}
			if err != nil || torn != tc.torn || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v torn %d err %v; want %v torn %d", got, torn, err, tc.want, tc.torn)
			}
		})
	}
	if torn, err := ReadLines(filepath.Join(t.TempDir(), "missing"), func([]byte) error { return nil }); torn != 0 || err != nil {
		t.Fatalf("missing file: torn %d err %v", torn, err)
	}
}

func TestMkdirAllCreatesNestedDirs(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b", "c")
	for range 2 { // the second call finds it there
		if err := MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Fatalf("%s: %v", dir, err)
		}
	}
	blocker := filepath.Join(base, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(blocker, "sub"), 0o755); err == nil {
		t.Fatal("MkdirAll under a regular file succeeded")
	}
}

// A failed append (a full disk part way through the line) is cut back, so
// the next append does not bury a partial line in the middle of the file:
// every line reads back, none is torn.
func TestAppendFileCutsBackAFailedAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.jsonl")
	a, err := OpenAppend(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Append([]byte("1")); err != nil {
		t.Fatal(err)
	}
	h := writeHook
	writeHook = func(f *os.File, data []byte) error {
		if _, err := f.Write(data[:len(data)-1]); err != nil {
			return err
		}
		return syscall.ENOSPC
	}
	err = a.Append([]byte("22222"))
	writeHook = h
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v", err)
	}
	if err := a.Append([]byte("3")); err != nil {
		t.Fatal(err)
	}
	var got []string
	torn, err := ReadLines(path, func(b []byte) error {
		if _, err := fmt.Sscan(string(b), new(int)); err != nil {
			return err
		}
		got = append(got, string(b))
		return nil
	})
	if err != nil || torn != 0 || strings.Join(got, ",") != "1,3" {
		t.Fatalf("read back %v torn %d err %v; want 1,3", got, torn, err)
	}
	// Reopening continues at the end.
	a.Close()
	b, err := OpenAppend(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Append([]byte("4")); err != nil {
		t.Fatal(err)
	}
	if c, _ := os.ReadFile(path); string(c) != "1\n3\n4\n" {
		t.Fatalf("file holds %q", c)
	}
}
