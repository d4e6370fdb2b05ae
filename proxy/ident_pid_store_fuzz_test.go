package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/statefile"
)

// loadSessions loads content as a sessions file in dir.
func loadSessions(t *testing.T, dir string, content []byte) (*producerIDs, error) {
	t.Helper()
	path := filepath.Join(dir, pidStoreFile)
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	p := &producerIDs{}
	return p, loadPIDRecords(path, p, hclog.NewNullLogger())
}

// A line that is valid JSON but no record ("{}", "null", a session without
// its cluster) is a damaged line, not an empty session: it used to load as
// a session of virtual PID 0 on cluster "".
func TestProducerSessionsRefuseRecordsKproxyNeverWrites(t *testing.T) {
	for _, line := range []string{"{}", "null", `{"v":5,"p":41}`, `{"v":5,"c":"elsewhere","p":41}`} {
		dir := t.TempDir()
		_, err := loadSessions(t, dir, []byte(line+"\n{\"moved\":\"orders\",\"m\":1}\n"))
		var le *statefile.LineError
		if !errors.As(err, &le) || le.Line != 1 {
			t.Errorf("%s: %v, want line 1 refused", line, err)
		}
	}
}

func sameSessions(a, b *producerIDs) bool {
	return maps.Equal(a.m, b.m) && maps.Equal(a.moved, b.moved) && fmt.Sprint(liveOldHomes(a)) == fmt.Sprint(liveOldHomes(b))
}

// liveOldHomes is the drains' notes a compaction keeps: each topic's for
// its current or next move (decision 008), with partitions' producers in
// file order.
func liveOldHomes(p *producerIDs) map[string]oldHomeSnapshot {
	out := map[string]oldHomeSnapshot{}
	for t, snap := range p.oldHomes {
		if snap.moves >= p.moved[t] {
			out[t] = snap
		}
	}
	return out
}

// FuzzProducerSessionsFile: any bytes in producer-sessions.jsonl give
// either a session table or an error naming the file and the first line
// that does not read, where every line before it reads and the line ends
// in a newline (only a torn last line is forgiven). Appending anything
// without a newline to a complete file (a crash mid-append) never stops
// start-up and either leaves the table as it was or adds that record as a
// complete line would. A loaded table survives openPIDStore's compacted
// rewrite unchanged.
func FuzzProducerSessionsFile(f *testing.F) {
	valid := "{\"v\":-9223372036854775803,\"ve\":1,\"c\":\"source\",\"p\":41,\"e\":2}\n{\"moved\":\"orders\",\"m\":2}\n{\"v\":-9223372036854775803,\"ve\":1,\"c\":\"target\",\"t\":\"orders\",\"m\":2,\"p\":77}\n"
	f.Add([]byte(valid), []byte(`{"v":12,"c":"sou`))
	f.Add([]byte(valid), []byte(`{"moved":"payments","m":1}`))
	f.Add([]byte(valid+"{\"c\":\"source\",\"m\":3,\"oh\":\"orders\",\"ps\":[[0,41,2,99],[1,41,2,7]]}\n"), []byte(`{"c":"target","m":3,"oh":"orders","ps":[[2,77,0,5]]}`))
	f.Add([]byte(""), []byte("{}"))
	f.Add([]byte("{\"c\":\"source\"}\n\x00garbage\n{\"moved\":\"x\",\"m\":1}\n"), []byte("null"))
	f.Add([]byte("\n"), []byte(" "))
	f.Fuzz(func(t *testing.T, data, tail []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, pidStoreFile)
		p, err := loadSessions(t, dir, data)
		if err != nil {
			var le *statefile.LineError
			if !errors.As(err, &le) || le.Path != path || le.Line < 1 {
				t.Fatalf("error %v: want a *statefile.LineError naming %s and a line", err, path)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%s line %d", path, le.Line)) {
				t.Fatalf("error %q does not name %s line %d", err, path, le.Line)
			}
			lines := bytes.SplitAfter(data, []byte("\n"))
			if le.Line > len(lines) || !bytes.HasSuffix(lines[le.Line-1], []byte("\n")) {
				t.Fatalf("line %d refused, but it is not a complete line of %q", le.Line, data)
			}
			if _, err := loadSessions(t, dir, bytes.Join(lines[:le.Line-1], nil)); err != nil {
				t.Fatalf("line %d named, but an earlier line does not read either: %v", le.Line, err)
			}
			return
		}

		// A crash mid-append after a complete file.
		if len(data) == 0 || data[len(data)-1] == '\n' {
			torn := bytes.ReplaceAll(tail, []byte("\n"), nil)
			if len(torn) > 0 {
				withTorn := append(append([]byte(nil), data...), torn...)
				q, err := loadSessions(t, dir, withTorn)
				if err != nil {
					t.Fatalf("a file with an unterminated last line %q did not load: %v", torn, err)
				}
				whole, werr := loadSessions(t, dir, append(withTorn, '\n'))
				if !sameSessions(q, p) && (werr != nil || !sameSessions(q, whole)) {
					t.Fatalf("the unterminated last line %q changed the table, and not as the record it is", torn)
				}
			}
		}

		// The compacted rewrite at start-up keeps every session and move.
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		loaded := &producerIDs{}
		st, err := openPIDStore(dir, loaded, hclog.NewNullLogger())
		if err != nil {
			t.Fatalf("openPIDStore of a file loadPIDRecords reads: %v", err)
		}
		st.close()
		compacted, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		again, err := loadSessions(t, dir, compacted)
		if err != nil {
			t.Fatalf("the compacted file does not load: %v\n%s", err, compacted)
		}
		if !sameSessions(again, p) {
			t.Fatalf("compacting changed the table:\n%v %v\n%v %v", p.m, p.moved, again.m, again.moved)
		}
	})
}
