package config

import (
	"slices"
	"strings"
	"testing"
)

// cutover.require takes gate names, rejects unknown ones with the list of
// known gates, and a change of it is a diff line (a list is compared by
// value, not by ==, which would panic on a slice).
func TestCutoverRequire(t *testing.T) {
	old, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if len(old.Cutover.Require) != 0 {
		t.Errorf("default require: %v", old.Cutover.Require)
	}
	next, err := Parse([]byte(minimal + "cutover:\n  require: [caught_up, partitions]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(next.Cutover.Require, []string{GateCaughtUp, GatePartitions}) {
		t.Errorf("require: %v", next.Cutover.Require)
	}
	d := Diff(old, next)
	if !slices.Contains(d, "cutover.require: []→[caught_up partitions]") {
		t.Errorf("diff lacks the require change: %q", d)
	}
	_, err = Parse([]byte(minimal + "cutover:\n  require: [caught_up, nope]\n"))
	if err == nil || !strings.Contains(err.Error(), `cutover.require[1]`) || !strings.Contains(err.Error(), `unknown gate "nope"`) {
		t.Errorf("unknown gate: %v", err)
	}
}
