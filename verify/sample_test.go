package verify

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/replicator"
)

// Sample compares the last n offsets of a partition through a map: a true
// copy passes (also through a map whose source side is shifted, as the copy
// back's maps are), a map that points one offset off fails with the
// record difference, and n bounds what is read.
func TestSample(t *testing.T) {
	e := newVerifyEnv(t)
	e.produce(e.src, 0, "a", 20)
	e.transaction(0, 4, true)
	e.transaction(0, 3, false)
	e.produce(e.src, 0, "b", 10)
	e.replicate(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, tgt := e.client(e.src), e.client(e.tgt)
	m := e.loadMap(0)

	if r := Sample(ctx, src, tgt, m, 5); !r.OK || r.Records != 5 {
		t.Errorf("last 5 of a true copy: %+v", r)
	}
	// The last 20 offsets: 10 "b" records, the aborted transaction (3
	// records and its marker), the committed one (4 records and its
	// marker) and the last "a" record: 15 committed records compared.
	if r := Sample(ctx, src, tgt, m, 20); !r.OK || r.Records != 10+4+1 {
		t.Errorf("last 20 of a true copy: %+v", r)
	}

	load := func(b []byte) *replicator.OffsetMap {
		t.Helper()
		lm, err := replicator.Load(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return lm
	}
	meta, ss, ts, se := m.Meta(), m.SourceStart(), m.TargetStart(), m.SourceEnd()
	runs := mapRuns(m)
	const shift = 1000
	shifted := meta
	shifted.SourceShift = shift
	var sruns []mapRun
	for _, r := range runs {
		sruns = append(sruns, mapRun{r.src + shift, r.tgt, r.n})
	}
	if r := Sample(ctx, src, tgt, load(encodeMap(shifted, ss+shift, ts, sruns, se+shift)), 5); !r.OK || r.Records != 5 {
		t.Errorf("last 5 through a shifted map: %+v", r)
	}

	// Every target offset one too high: the last source record maps to
	// the end, the others to their successors' copies.
	var off []mapRun
	for _, r := range runs {
		off = append(off, mapRun{r.src, r.tgt + 1, r.n})
	}
	if r := Sample(ctx, src, tgt, load(encodeMap(meta, ss, ts+1, off, se)), 5); r.OK || !strings.Contains(r.Problem, "differ") {
		t.Errorf("last 5 through a map one offset off: %+v", r)
	}
}
