package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// answer is a stand-in answer for splitByCluster's contract tests.
type answer struct {
	name string
	code int16
	msg  *string
}

// splitByCluster answers every item once, in request order: from the
// cluster that answered it, REQUEST_TIMED_OUT where its cluster gave no
// answer, UNKNOWN_SERVER_ERROR where the answer left it out, and the first
// error of either cluster for an item sent to two.
func TestSplitByClusterAnswersEveryItemInOrder(t *testing.T) {
	where := map[string][]string{
		"a": {"src"}, "b": {"tgt"}, "c": {"src"}, "d": {"src", "tgt"}, "e": {"src", "tgt"}, "f": {"down"},
	}
	answers := map[string][]answer{
		"src": {{name: "a"}, {name: "d", code: 0}, {name: "e", code: 36}},
		"tgt": {{name: "b"}, {name: "d", code: 41}, {name: "e", code: 0}},
	}
	throttles := map[string]int32{"src": 5, "tgt": 9}
	got, throttle := splitByCluster([]string{"f", "e", "d", "c", "b", "a", "a"}, clusterSplit[string, answer]{
		clusters: func(n string) []string { return where[n] },
		send: func(c string, part []string) ([]answer, int32, bool) {
			if c == "down" {
				return nil, 0, false
			}
			return answers[c], throttles[c], true
		},
		itemKey:   func(n string) string { return n },
		answerKey: func(a answer) string { return a.name },
		failed:    func(n string, code int16, msg string) answer { return answer{n, code, &msg} },
		errOf:     func(a *answer) (*int16, **string) { return &a.code, &a.msg },
	})
	want := []answer{
		{name: "f", code: kerr.RequestTimedOut.Code},
		{name: "e", code: 36},
		{name: "d", code: 41},
		{name: "c", code: kerr.UnknownServerError.Code},
		{name: "b"},
		{name: "a"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d answers %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].name != want[i].name || got[i].code != want[i].code {
			t.Errorf("answer %d: %s %d, want %s %d", i, got[i].name, got[i].code, want[i].name, want[i].code)
		}
	}
	if throttle != 9 {
		t.Errorf("throttle %d, want the largest, 9", throttle)
	}
}
