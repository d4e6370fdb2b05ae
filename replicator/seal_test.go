package replicator

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A drain is told as soon as the copy reaches its end, before the map's
// save; so sealing a topic must say when that save failed, or a flip would
// commit on a map that is not on disk. Here the state directory of the
// topic is replaced by a regular file (every save fails, for root too).
func TestSealTopicRefusesAnUnsavedMap(t *testing.T) {
	pp := startPair(t, []string{"s"}, 1, Options{FetchMaxWait: 5 * time.Millisecond, IdleFetchWait: 50 * time.Millisecond})
	dir := filepath.Join(pp.r.opts.StateDir, "s")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	pp.produce(t, "s", 0, 1)
	pp.waitCopied(t, "s", 0, 2) // published, then the save fails
	maps, err := pp.r.SealTopic("s")
	if err == nil {
		t.Fatalf("sealed an unsaved map without an error (maps %v)", maps)
	}
	t.Logf("seal refused: %v", err)
}
