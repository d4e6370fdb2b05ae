// Package bench holds the benchmark scripts and their committed results;
// this test keeps bench/results.json readable by the tools that compare
// runs (bench/assemble.py merges into it by benchmark and metric).
package bench

import (
	"encoding/json"
	"math"
	"os"
	"regexp"
	"testing"
)

// benchmarkName is what a name in results.json may look like: plain words
// joined by underscores, so a name can be grepped, used as a key and
// typed; what it measures in more words goes in "description" or "note".
var benchmarkName = regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)*$`)

func TestResultsJSONEntriesAreWellFormed(t *testing.T) {
	raw, err := os.ReadFile("results.json")
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	if err := json.Unmarshal(raw, &entries); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(entries) == 0 {
		t.Fatal("results.json has no entries")
	}
	for i, e := range entries {
		name, _ := e["benchmark"].(string)
		if !benchmarkName.MatchString(name) {
			t.Errorf("entry %d: benchmark %q: want lower-case words joined by underscores", i, name)
		}
		for _, k := range []string{"metric", "unit"} {
			if s, _ := e[k].(string); s == "" {
				t.Errorf("entry %d (%s): no %s", i, name, k)
			}
		}
		for _, k := range []string{"kproxy", "baseline", "ratio"} {
			if _, ok := e[k]; !ok {
				t.Errorf("entry %d (%s %v): no %s (null when there is none)", i, name, e["metric"], k)
			}
		}
		kp, kok := e["kproxy"].(float64)
		if !kok {
			t.Errorf("entry %d (%s %v): kproxy is %v, want a number", i, name, e["metric"], e["kproxy"])
		}
		// The ratio is kproxy over baseline, rounded when it was written.
		base, bok := e["baseline"].(float64)
		ratio, rok := e["ratio"].(float64)
		if kok && bok && rok && base != 0 {
			if want := kp / base; math.Abs(want-ratio) > 0.02*math.Abs(want)+0.002 {
				t.Errorf("entry %d (%s %v): ratio %v, but kproxy/baseline is %.4f", i, name, e["metric"], ratio, want)
			}
		}
	}
}
