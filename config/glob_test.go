package config

import (
	"path"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestGlobLength(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, pattern string
		want          int
	}{
		{"an exact name counts its characters", "orders", 6},
		{"a star counts nothing", "logs.*", 5},
		{"a longer prefix is longer", "logs.eu.*", 8},
		{"a question mark counts one", "logs.?", 6},
		{"a class counts one", "logs.[a-z]*", 6},
		{"an escape counts the escaped character", `a\*b`, 3},
		{"stars alone are length zero", "**", 0},
		{"a malformed glob is -1", "logs.[", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := GlobLength(tt.pattern); got != tt.want {
				t.Errorf("GlobLength(%q) = %d, want %d", tt.pattern, got, tt.want)
			}
		})
	}
}

func TestGlobOverlap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, a, b string
		overlap    bool
		witness    string // the expected shortest common name, when it is unique
	}{
		{"a glob overlaps itself", "logs.*", "logs.*", true, "logs."},
		{"a prefix glob and a suffix glob overlap", "logs.*", "*.eu", true, "logs.eu"},
		{"different literal prefixes do not overlap", "logs.*", "data.*", false, ""},
		{"a star and a question mark overlap", "a*", "?b", true, "ab"},
		{"disjoint classes do not overlap", "[a-f]x", "[g-z]x", false, ""},
		{"intersecting classes overlap", "[a-f]x", "[e-z]x", true, "ex"},
		{"a negated class excludes its characters", "[^a]", "a", false, ""},
		{"a negated class admits others", "[^a]", "?", true, "b"},
		{"stars do not match a slash", "a*b", `a\/b`, false, ""},
		{"a class may match a slash", "a[/]b", `a\/b`, true, "a/b"},
		{"lengths that cannot agree do not overlap", "??", "???", false, ""},
		{"stars on both sides meet in the middle", "*-billing", "billing-*", true, "billing-billing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, ok := globOverlap(tt.a, tt.b)
			if ok != tt.overlap {
				t.Fatalf("globOverlap(%q, %q) = %q, %v; want overlap %v", tt.a, tt.b, w, ok, tt.overlap)
			}
			if !ok {
				return
			}
			if tt.witness != "" && w != tt.witness {
				t.Errorf("witness %q, want %q", w, tt.witness)
			}
			for _, p := range []string{tt.a, tt.b} {
				if m, _ := path.Match(p, w); !m {
					t.Errorf("witness %q does not match %q", w, p)
				}
			}
		})
	}
}

// escape returns a glob that matches exactly name.
func escape(name string) string {
	var b strings.Builder
	for _, r := range name {
		b.WriteByte('\\')
		b.WriteRune(r)
	}
	return b.String()
}

// FuzzGlobAgreesWithPathMatch checks that parseGlob accepts exactly the
// patterns path.Match accepts, that MatchGlob (every run-time match) decides
// as path.Match does on ASCII names, and that globOverlap against a literal
// name decides as MatchGlob does on every name. Validation and routing
// depend on the last two agreeing.
func FuzzGlobAgreesWithPathMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"logs.*", "logs.eu"}, {"*", ""}, {"a?c", "abc"}, {"[^a-c]x", "dx"}, {`\*`, "*"},
		{"[", "a"}, {"[]a]", "a"}, {"[-a]", "a"}, {"[a-]", "a"}, {`a\`, "a"}, {"[^]", "x"},
		{"*/b", "a/b"}, {"a*", "a/b"}, {"[a/]", "/"}, {"é*", "éa"}, {"[\\]]", "]"}, {"**x*", "yxz"},
		{"*??", "覦"}, {"*[^a]", "é"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(name) {
			t.Skip("path.Match compares literals bytewise; kproxy names are valid UTF-8")
		}
		_, perr := parseGlob(pattern)
		_, merr := path.Match(pattern, name)
		if (perr == nil) != (merr == nil) {
			t.Fatalf("pattern %q: parseGlob error %v, path.Match error %v", pattern, perr, merr)
		}
		if perr != nil {
			return
		}
		want := MatchGlob(pattern, name)
		if pm, _ := path.Match(pattern, name); pm != want && isASCII(name) {
			// path.Match's '*' steps over bytes, so it differs (and is
			// wrong) only on multi-byte characters.
			t.Fatalf("MatchGlob(%q, %q) = %v, path.Match = %v", pattern, name, want, pm)
		}
		w, got := globOverlap(pattern, escape(name))
		if got != want {
			t.Fatalf("globOverlap(%q, %q) = %v, MatchGlob = %v", pattern, name, got, want)
		}
		if got && w != name {
			t.Fatalf("witness %q, want the name %q itself", w, name)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// MatchGlob is path.Match with a '*' that consumes whole characters (the
// fuzz target found path.Match's byte-wise '*' matching "*??" against one
// three-byte character).
func TestMatchGlobStarConsumesWholeCharacters(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"*??", "覦", false}, {"*??", "覦覦", true}, {"*[^a]", "é", true}, {"*?[^a]", "é", false},
		{"a*", "a/b", false}, {"*/*", "a/b", true}, {"*[/]x", "a/x", true}, {`[\]a]*`, "]bc", true},
		{`\*x`, "*x", true}, {"l*s.*", "logs.eu", true}, {"*.eu", "logs.us", false}, {"", "", true}, {"*", "", true},
	} {
		if got := MatchGlob(c.pattern, c.name); got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
		if _, overlap := globOverlap(c.pattern, escape(c.name)); overlap != c.want {
			t.Errorf("globOverlap(%q, %q) = %v, want %v", c.pattern, c.name, overlap, c.want)
		}
	}
}

// A class's ranges are kept sorted and merged, so membership is a binary
// search however long the class is written (a fuzz input's class of 2,000
// 'Z's made each overlap check take seconds).
func TestClassRangesAreSortedAndMerged(t *testing.T) {
	set, rest, err := parseClass(`ZZ0Za-cb-dz-aZ\]]x`)
	if err != nil || rest != "x" {
		t.Fatalf("parseClass: %v, rest %q", err, rest)
	}
	want := []runeRange{{'0', '0'}, {'Z', 'Z'}, {']', ']'}, {'a', 'd'}}
	if !slices.Equal(set.ranges, want) {
		t.Fatalf("ranges %q, want %q", set.ranges, want)
	}
	for r := rune(0); r < 200; r++ {
		naive := r == '0' || r == 'Z' || r == ']' || ('a' <= r && r <= 'd')
		if set.has(r) != naive {
			t.Errorf("has(%q) = %v, want %v", r, set.has(r), naive)
		}
	}
}
