package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// billionLaughs is a config whose routes.topics stands, through merge keys,
// for width^depth copies of one route: a few hundred bytes.
func billionLaughs(depth, width int) string {
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:9092\nclusters:\n  source: { bootstrap: [127.0.0.1:19092] }\nreplication:\n  a0: &a0 {orders: source}\n")
	for d := 1; d <= depth; d++ {
		fmt.Fprintf(&b, "  a%d: &a%d\n    <<: [", d, d)
		for w := range width {
			if w > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", d-1)
		}
		b.WriteString("]\n")
	}
	fmt.Fprintf(&b, "routes:\n  topics: *a%d\n", depth)
	return b.String()
}

// Before the bound, the key check walked every expansion: depth 7 took
// seconds and depth 10 would have taken hours (9^10 paths).
func TestParseBoundsAliasExpansion(t *testing.T) {
	doc := billionLaughs(10, 9)
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "aliases") {
		t.Fatalf("Parse(%d-byte billion laughs) = %v, want the aliasing refused", len(doc), err)
	}
	// Aliases and merge keys within reason still work.
	ok := "listen: 127.0.0.1:9092\nclusters:\n  source: { bootstrap: [127.0.0.1:19092] }\n  target: { bootstrap: [127.0.0.1:29092] }\nroutes:\n  default: source\n  topics:\n    orders: &r { produce: source, fetch: target }\n    payments: { <<: *r, fetch: source }\n"
	c, err := Parse([]byte(ok))
	if err != nil {
		t.Fatalf("Parse(aliased config) = %v", err)
	}
	if got := c.Routes.Topics["payments"]; got.Produce != Source || got.Fetch != Source {
		t.Errorf("payments = %+v, want produce source (merged), fetch source (own key)", got)
	}
}

// FuzzParse: Parse never panics and stays bounded on any input (the alias
// bound above); a config it accepts parses again to the same Config with no
// differences reported by Diff; every problem it reports is located: a
// FieldError with a YAML path, or a message naming a line, or one about
// the whole document.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(billionLaughs(3, 3)))
	f.Add([]byte("listen: :9092\nadvertise: kproxy:9092\nclusters: {target: {bootstrap: [t:1]}}\n"))
	f.Add([]byte("listen: 127.0.0.1:9092\nclusters: {source: {bootstrap: [a:1]}}\nroutes: {topics: {\"logs.*\": {route: source, canary: {fetch: target, percent: 200}}}}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			checkLocated(t, err)
			return
		}
		again, err := Parse(data)
		if err != nil {
			t.Fatalf("accepted once, refused the second time: %v", err)
		}
		if d := Diff(c, again); len(d) > 0 {
			t.Fatalf("the same file parsed twice differs: %q", d)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("the same file parsed twice differs:\n%+v\n%+v", c, again)
		}
		if c.Hash() == "" {
			t.Fatal("an accepted config has no hash")
		}
	})
}

// checkLocated fails t unless every problem in err says where it is.
func checkLocated(t *testing.T, err error) {
	t.Helper()
	if err.Error() == "" {
		t.Fatal("empty error")
	}
	var leaves []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		leaves = append(leaves, e)
	}
	walk(err)
	for _, e := range leaves {
		var fe *FieldError
		switch msg := e.Error(); {
		case errors.As(e, &fe):
			if fe.Path == "" || fe.Msg == "" {
				t.Fatalf("FieldError without a path or message: %#v", fe)
			}
		case strings.Contains(msg, "line "),
			strings.HasPrefix(msg, "config "), // about the whole file: empty, several documents, aliasing
			strings.HasPrefix(msg, "yaml: "):  // the YAML scanner's own errors (some carry no line)
		default:
			t.Fatalf("error names neither a YAML path nor a line: %q", msg)
		}
	}
}
