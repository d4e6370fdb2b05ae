package config

// Globs in routes.topics, groups, replicate and canary selectors use path.Match
// syntax: '*' (any run of non-'/' characters), '?' (one non-'/' character),
// '[...]' and '[^...]' classes, and '\' escapes.
//
// Precedence, shared by validation here and by package routing:
//
//   - an exact name (a key without any of * ? [ \) beats every glob;
//   - among matching globs the longest wins, where a glob's length is
//     GlobLength: the number of characters every name it matches must have
//     ('*' counts 0; a literal, '?' or a class counts 1). For ordinary globs
//     such as "logs.*" against "logs.eu.*" this is simply the number of
//     literal characters;
//   - two different globs of equal length that can match the same name are
//     ambiguous, and validation rejects them. The check is exact, not a
//     heuristic: globOverlap intersects the two patterns as automata and, when
//     they overlap, returns a shortest name matched by both, which the error
//     message shows so the operator sees the conflict.

import (
	"cmp"
	"path"
	"slices"
	"strings"
	"unicode/utf8"
)

// IsGlob reports whether s is a glob (contains *, ?, [ or \) rather than an
// exact name.
func IsGlob(s string) bool {
	return strings.ContainsAny(s, `*?[\`)
}

// GlobLength is the precedence of a glob among matching globs: the number of
// characters a matching name must contain ('*' counts 0; a literal character,
// '?' or a class counts 1). For an exact name it is the name's length in
// runes. It returns -1 for a malformed pattern.
func GlobLength(pattern string) int {
	toks, err := parseGlob(pattern)
	if err != nil {
		return -1
	}
	n := 0
	for _, t := range toks {
		if !t.star {
			n++
		}
	}
	return n
}

// runeRange is the inclusive range lo..hi.
type runeRange struct{ lo, hi rune }

// charSet is a set of runes: the union of ranges, or its complement when neg.
// The ranges are sorted and disjoint (parseClass normalizes them), so a
// class of thousands of characters costs a binary search per rune and few
// candidates in pick: the fuzz target's class of 2,000 'Z's made one overlap
// check take seconds when each was its own range.
type charSet struct {
	ranges []runeRange
	neg    bool
}

func (s charSet) has(r rune) bool {
	i, _ := slices.BinarySearchFunc(s.ranges, r, func(rr runeRange, r rune) int { return cmp.Compare(rr.hi, r) })
	in := i < len(s.ranges) && s.ranges[i].lo <= r
	return in != s.neg
}

// normalized returns ranges sorted, with overlapping and adjacent ranges
// merged and empty ones (lo > hi, which path.Match accepts and which match
// nothing) dropped.
func normalized(ranges []runeRange) []runeRange {
	ranges = slices.DeleteFunc(ranges, func(rr runeRange) bool { return rr.lo > rr.hi })
	slices.SortFunc(ranges, func(a, b runeRange) int { return cmp.Compare(a.lo, b.lo) })
	out := ranges[:0]
	for _, rr := range ranges {
		if n := len(out); n > 0 && rr.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, rr.hi)
			continue
		}
		out = append(out, rr)
	}
	return out
}

// notSlash is what '*' and '?' may consume: any character but '/'.
var notSlash = charSet{ranges: []runeRange{{'/', '/'}}, neg: true}

// globToken is one term of a parsed glob: a '*' or a single-character set.
type globToken struct {
	star bool
	set  charSet
}

// parseGlob splits pattern into terms, accepting exactly the syntax that
// path.Match accepts (the tests check this against path.Match).
func parseGlob(pattern string) ([]globToken, error) {
	var toks []globToken
	for p := pattern; len(p) > 0; {
		switch p[0] {
		case '*':
			toks = append(toks, globToken{star: true})
			p = p[1:]
		case '?':
			toks = append(toks, globToken{set: notSlash})
			p = p[1:]
		case '[':
			set, rest, err := parseClass(p[1:])
			if err != nil {
				return nil, err
			}
			toks = append(toks, globToken{set: set})
			p = rest
		case '\\':
			if len(p) == 1 {
				return nil, path.ErrBadPattern
			}
			p = p[1:]
			fallthrough
		default:
			r, n := utf8.DecodeRuneInString(p)
			toks = append(toks, globToken{set: charSet{ranges: []runeRange{{r, r}}}})
			p = p[n:]
		}
	}
	return toks, nil
}

// parseClass parses a class body after '[' up to and including ']'.
func parseClass(p string) (charSet, string, error) {
	var set charSet
	if len(p) > 0 && p[0] == '^' {
		set.neg = true
		p = p[1:]
	}
	for {
		if len(p) > 0 && p[0] == ']' && len(set.ranges) > 0 {
			set.ranges = normalized(set.ranges)
			return set, p[1:], nil
		}
		lo, rest, err := classChar(p)
		if err != nil {
			return charSet{}, "", err
		}
		p = rest
		hi := lo
		if p[0] == '-' {
			if hi, p, err = classChar(p[1:]); err != nil {
				return charSet{}, "", err
			}
		}
		set.ranges = append(set.ranges, runeRange{lo, hi})
	}
}

// classChar reads one possibly escaped character of a class; like path.Match
// it requires more pattern to follow (at least the closing ']').
func classChar(p string) (rune, string, error) {
	if len(p) == 0 || p[0] == '-' || p[0] == ']' {
		return 0, "", path.ErrBadPattern
	}
	if p[0] == '\\' {
		p = p[1:]
		if len(p) == 0 {
			return 0, "", path.ErrBadPattern
		}
	}
	r, n := utf8.DecodeRuneInString(p)
	if r == utf8.RuneError && n == 1 {
		return 0, "", path.ErrBadPattern
	}
	if len(p[n:]) == 0 {
		return 0, "", path.ErrBadPattern
	}
	return r, p[n:], nil
}

// checkGlob reports whether pattern is well formed, with the same verdict as
// path.Match.
func checkGlob(pattern string) error {
	if _, err := path.Match(pattern, ""); err != nil {
		return err
	}
	_, err := parseGlob(pattern)
	return err
}

// preferredRunes are tried first when picking an example character, so that
// example names look like Kafka topic names.
const preferredRunes = "abcdefghijklmnopqrstuvwxyz0123456789.-_ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// pick returns a rune in every one of sets, if there is one. Membership of each
// set only changes at a range's lo or hi+1, so trying 0 and those points (after
// the preferred runes) decides emptiness of the intersection exactly.
func pick(sets ...charSet) (rune, bool) {
	in := func(r rune) bool {
		for _, s := range sets {
			if !s.has(r) {
				return false
			}
		}
		return true
	}
	for _, r := range preferredRunes {
		if in(r) {
			return r, true
		}
	}
	cands := []rune{0}
	for _, s := range sets {
		for _, rr := range s.ranges {
			cands = append(cands, rr.lo, rr.hi+1)
		}
	}
	for _, r := range cands {
		if r >= 0 && r <= utf8.MaxRune && in(r) {
			return r, true
		}
	}
	return 0, false
}

// pairState is a position in each of two patterns being intersected.
type pairState struct{ i, j int }

// pairStep records how a pairState was first reached: from which state, and
// either by skipping a '*' (eps) or by consuming the character r.
type pairStep struct {
	from pairState
	r    rune
	eps  bool
}

// globOverlap reports whether some name matches both a and b (both well
// formed) and returns a shortest such name. It explores the product of the two
// patterns' automata breadth-first by characters consumed: a '*' may be skipped
// for free, or consume one non-'/' character and stay put.
func globOverlap(a, b string) (string, bool) {
	ta, errA := parseGlob(a)
	tb, errB := parseGlob(b)
	if errA != nil || errB != nil {
		return "", false
	}
	start := pairState{}
	prev := map[pairState]pairStep{start: {}}
	cur := []pairState{start}
	for len(cur) > 0 {
		// Close the frontier under skipping stars.
		for k := 0; k < len(cur); k++ {
			s := cur[k]
			var skips []pairState
			if s.i < len(ta) && ta[s.i].star {
				skips = append(skips, pairState{s.i + 1, s.j})
			}
			if s.j < len(tb) && tb[s.j].star {
				skips = append(skips, pairState{s.i, s.j + 1})
			}
			for _, n := range skips {
				if _, seen := prev[n]; !seen {
					prev[n] = pairStep{from: s, eps: true}
					cur = append(cur, n)
				}
			}
		}
		for _, s := range cur {
			if s.i == len(ta) && s.j == len(tb) {
				return witness(prev, start, s), true
			}
		}
		// Consume one character.
		var next []pairState
		for _, s := range cur {
			if s.i == len(ta) || s.j == len(tb) {
				continue
			}
			x, y := ta[s.i], tb[s.j]
			var n pairState
			var r rune
			var ok bool
			switch {
			case x.star && y.star:
				continue // both stars take the character and stay: no progress
			case x.star:
				r, ok = pick(y.set, notSlash)
				n = pairState{s.i, s.j + 1}
			case y.star:
				r, ok = pick(x.set, notSlash)
				n = pairState{s.i + 1, s.j}
			default:
				r, ok = pick(x.set, y.set)
				n = pairState{s.i + 1, s.j + 1}
			}
			if _, seen := prev[n]; ok && !seen {
				prev[n] = pairStep{from: s, r: r}
				next = append(next, n)
			}
		}
		cur = next
	}
	return "", false
}

// witness rebuilds the characters consumed on the way from start to end.
func witness(prev map[pairState]pairStep, start, end pairState) string {
	var rs []rune
	for s := end; s != start; s = prev[s].from {
		if !prev[s].eps {
			rs = append(rs, prev[s].r)
		}
	}
	slices.Reverse(rs)
	return string(rs)
}

// MatchGlob reports whether name matches the glob pattern: path.Match's
// syntax and answer, except that '*' consumes whole characters. path.Match
// moves a '*' over the name one byte at a time, so a '?' or a negated class
// after it can match the trailing bytes of one multi-byte character ("*??"
// matches the single character "覦"). Validation's overlap check
// (globOverlap) reads names as characters, so with path.Match at run time
// two globs it had found disjoint could both match a group or
// transactional id; every run-time match in kproxy goes through here
// (found by FuzzGlobAgreesWithPathMatch at 9.8 million executions).
//
// pattern must be well formed (validation rejects the others); a malformed
// one matches nothing that reaches its malformed part. It allocates nothing:
// routing calls it per request.
func MatchGlob(pattern, name string) bool {
	p, n := 0, 0
	// The last '*' seen: where the pattern resumes after it, and how much of
	// the name it has consumed so far. Each term but '*' consumes exactly one
	// character, so retrying only the last star with one more character is
	// enough (an earlier star taking more only moves the rest to the right).
	starP, starN := -1, 0
	for {
		if p < len(pattern) && pattern[p] == '*' {
			p++
			starP, starN = p, n
			continue
		}
		if p == len(pattern) && n == len(name) {
			return true
		}
		if p < len(pattern) && n < len(name) {
			r, rn := utf8.DecodeRuneInString(name[n:])
			if ok, pn := matchTerm(pattern[p:], r); ok {
				p, n = p+pn, n+rn
				continue
			}
		}
		if starP < 0 || starN == len(name) {
			return false
		}
		r, rn := utf8.DecodeRuneInString(name[starN:])
		if r == '/' {
			return false // no '*' crosses a '/'
		}
		starN += rn
		p, n = starP, starN
	}
}

// matchTerm reports whether the first term of pattern (not '*') matches the
// character r, and the term's length in bytes.
func matchTerm(pattern string, r rune) (bool, int) {
	switch pattern[0] {
	case '?':
		return r != '/', 1
	case '[':
		in, rest, err := matchClass(pattern[1:], r)
		return in && err == nil, len(pattern) - len(rest)
	case '\\':
		if len(pattern) == 1 {
			return false, 1
		}
		lit, n := utf8.DecodeRuneInString(pattern[1:])
		return lit == r, 1 + n
	default:
		lit, n := utf8.DecodeRuneInString(pattern)
		return lit == r, n
	}
}

// matchClass reports whether r is in the class whose body (after '[') starts
// p, and the pattern after its ']'; the syntax is parseClass's, without
// building the set.
func matchClass(p string, r rune) (bool, string, error) {
	neg := false
	if len(p) > 0 && p[0] == '^' {
		neg, p = true, p[1:]
	}
	in := false
	for ranges := 0; ; ranges++ {
		if len(p) > 0 && p[0] == ']' && ranges > 0 {
			return in != neg, p[1:], nil
		}
		lo, rest, err := classChar(p)
		if err != nil {
			return false, "", err
		}
		p = rest
		hi := lo
		if p[0] == '-' {
			if hi, p, err = classChar(p[1:]); err != nil {
				return false, "", err
			}
		}
		if lo <= r && r <= hi {
			in = true
		}
	}
}
