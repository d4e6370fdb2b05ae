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
	// The copy saves its map after it publishes the first record, then
	// asks for the next: once it is parked, that save is done (a failed
	// one would restart the session, which cannot start without dir).
	pp.waitParked(t, 1)
	dir := filepath.Join(pp.r.opts.StateDir, "s")
	// The copy writes into dir as it starts (its producer id file,
	// session.go), so removing dir can race that write: try again until
	// the file stands where the directory was.
	for try := 0; ; try++ {
		err := os.RemoveAll(dir)
		if err == nil {
			err = os.WriteFile(dir, []byte("not a directory"), 0o644)
		}
		if err == nil {
			break
		}
		if try == 100 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pp.produce(t, "s", 0, 1)
	pp.waitCopied(t, "s", 0, 2) // published, then the save fails
	maps, err := pp.r.SealTopic("s")
	if err == nil {
		t.Fatalf("sealed an unsaved map without an error (maps %v)", maps)
	}
	t.Logf("seal refused: %v", err)
}
