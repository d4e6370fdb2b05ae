// Package statefile writes kproxy's durable state: files that record a
// decision (a flip's marker, group homes, topic ids, offset maps) and the
// lock that makes one process the owner of a state directory.
//
// A decision is written to a new file with a unique name in the same
// directory, fsynced, renamed over the old file, and the directory is
// fsynced: after a crash or a power loss the path holds either the old
// content or the new, never a mix, an empty file or nothing. A write that
// fails (disk full, read-only file system) returns the error and leaves the
// old file as it was.
package statefile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// writeHook replaces the data write in tests, to fail it part way like a
// full disk would.
var writeHook = func(f *os.File, data []byte) error {
	_, err := f.Write(data)
	return err
}

// WriteAtomic replaces path with data (created with perm), durably. The
// directory must exist.
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		err = writeHook(f, data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory, making the names created, renamed or removed
// in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// LineError is an unreadable line of an append-only file that is not its
// torn last line: the file is damaged, and what it recorded is not known.
type LineError struct {
	Path string
	Line int
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("%s line %d is unreadable (only a torn last line, from a crash mid-append, is skipped; this one is followed by more data or ends in a newline, so the file is damaged): %v", e.Path, e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// ReadLines calls decode with every line of the append-only file at path
// (without its newline). A missing file has no lines. Appends write a line
// and its newline in one write, so a crash mid-append leaves a last line
// without a newline: if decode refuses that one, ReadLines returns its
// number as torn and no error. Any other line decode refuses stops the read
// with a *LineError naming the file and line. decode must have no effect
// when it returns an error.
func ReadLines(path string, decode func([]byte) error) (torn int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rd := bufio.NewReader(f)
	for line := 1; ; line++ {
		b, rerr := rd.ReadBytes('\n')
		if rerr != nil && rerr != io.EOF {
			return 0, fmt.Errorf("reading %s: %w", path, rerr)
		}
		if len(b) == 0 {
			return 0, nil
		}
		if rerr == io.EOF { // no newline: the last append may be torn
			if decode(b) != nil {
				return line, nil
			}
			return 0, nil
		}
		if derr := decode(bytes.TrimSuffix(b, []byte("\n"))); derr != nil {
			return 0, &LineError{Path: path, Line: line, Err: derr}
		}
	}
}

// MkdirAll creates dir and any missing parents, and fsyncs the directory
// holding each one it creates, so the new names survive a power loss along
// with the files later written into them.
func MkdirAll(dir string, perm os.FileMode) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(created) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	for _, d := range created {
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}
