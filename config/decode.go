package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem in a configuration file, located by its YAML path
// and, when known, its line.
type FieldError struct {
	// Path is the YAML path of the offending value, keys joined by '.',
	// sequence indexes in brackets, and keys that contain '.', brackets,
	// quotes, spaces or glob characters quoted: routes.topics."logs.*".canary.
	Path string
	// Line is the 1-based line of the value (or of the key, for problems
	// with the key itself); 0 when unknown.
	Line int
	// Msg says what is wrong and, where it helps, what would be right.
	Msg string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", e.Path, e.Line, e.Msg)
	}
	return e.Path + ": " + e.Msg
}

// pathStep is one step of a yamlPath.
type pathStep struct {
	key   string
	index int // >= 0 selects a sequence element; -1 selects the value of key
}

// yamlPath locates a node in a YAML document.
type yamlPath []pathStep

func (p yamlPath) key(k string) yamlPath {
	return append(slices.Clip(p), pathStep{key: k, index: -1})
}

func (p yamlPath) index(i int) yamlPath {
	return append(slices.Clip(p), pathStep{index: i})
}

func (p yamlPath) String() string {
	var b strings.Builder
	for i, s := range p {
		if s.index >= 0 {
			fmt.Fprintf(&b, "[%d]", s.index)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		if needsQuote(s.key) {
			b.WriteString(strconv.Quote(s.key))
		} else {
			b.WriteString(s.key)
		}
	}
	return b.String()
}

func needsQuote(k string) bool {
	if k == "" || IsGlob(k) || strings.ContainsAny(k, `."' ]`) {
		return true
	}
	return strings.IndexFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0
}

// find returns the key and value nodes at p under root, looking keys up with
// lookup (the validator's, which indexes each mapping); for a sequence element
// both are the element. When the walk meets a scalar with steps left, it
// returns that scalar: the short form `orders: target` stands for the produce
// and fetch below it. Both are nil when p does not exist in the document.
func (p yamlPath) find(root *yaml.Node, lookup func(m *yaml.Node, k string) (key, val *yaml.Node)) (key, val *yaml.Node) {
	n := deref(root)
	for _, s := range p {
		switch {
		case n == nil:
			return nil, nil
		case n.Kind == yaml.ScalarNode:
			return key, n
		case s.index >= 0:
			if n.Kind != yaml.SequenceNode || s.index >= len(n.Content) {
				return nil, nil
			}
			key, n = n.Content[s.index], deref(n.Content[s.index])
		default:
			key, n = lookup(n, s.key)
			n = deref(n)
			if key == nil {
				return nil, nil
			}
		}
	}
	return key, n
}

// deref follows document and alias nodes to the node they stand for.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil {
		switch {
		case n.Kind == yaml.DocumentNode && len(n.Content) == 1:
			n = n.Content[0]
		case n.Kind == yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

// forEachPair calls fn for each key/value pair of mapping m, own keys first,
// then keys brought in by YAML merge keys (<<: *anchor) in order. A mapping
// is visited once: a merge key may name a mapping that contains it (`a:
// &x {<<: *x}`), which recursed until the stack overflowed and took the
// process down (found by FuzzParse); yaml.v3 then refuses the document.
func forEachPair(m *yaml.Node, fn func(k, v *yaml.Node)) {
	forEachPairOnce(m, fn, map[*yaml.Node]bool{})
}

func forEachPairOnce(m *yaml.Node, fn func(k, v *yaml.Node), seen map[*yaml.Node]bool) {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode || seen[m] {
		return
	}
	seen[m] = true
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		fn(k, v)
	}
	for _, v := range merges {
		v = deref(v)
		if v.Kind == yaml.SequenceNode {
			for _, e := range v.Content {
				forEachPairOnce(e, fn, seen)
			}
			continue
		}
		forEachPairOnce(v, fn, seen)
	}
}

var groupsType = reflect.TypeFor[Groups]()

// checkKeys appends a FieldError for every mapping key under n that the Go
// type t does not declare. yaml.v3's KnownFields also rejects unknown keys,
// but names Go types instead of YAML paths, and custom unmarshalers below it
// (TopicRoute, Groups) lose the setting, because Node.Decode starts a
// non-strict decoder. Shape mismatches (a list where a map belongs) are left
// to the decoder, which reports them with their lines.
func checkKeys(n *yaml.Node, t reflect.Type, p yamlPath, errs *[]error) {
	n = deref(n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n == nil || t == groupsType { // groups is a map of group globs to clusters
		return
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields, names := yamlFields(t)
		forEachPair(n, func(k, v *yaml.Node) {
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, &FieldError{
					Path: p.key(k.Value).String(),
					Line: k.Line,
					Msg:  "unknown key (known keys here: " + strings.Join(names, ", ") + ")",
				})
				return
			}
			checkKeys(v, ft, p.key(k.Value), errs)
		})
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		forEachPair(n, func(k, v *yaml.Node) {
			checkKeys(v, t.Elem(), p.key(k.Value), errs)
		})
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			checkKeys(e, t.Elem(), p.index(i), errs)
		}
	}
}

// yamlFields maps the YAML keys of struct type t to their field types, and
// lists the keys in declaration order.
func yamlFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := map[string]reflect.Type{}
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	return fields, names
}

// UnmarshalYAML accepts the short form (a cluster name) and the map form.
func (r *TopicRoute) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var c Cluster
		if err := n.Decode(&c); err != nil {
			return err
		}
		*r = TopicRoute{Route: c}
		return nil
	}
	type plain TopicRoute // the same fields without this method
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*r = TopicRoute(p)
	return nil
}

// UnmarshalYAML splits the key "default" from the group globs.
func (g *Groups) UnmarshalYAML(n *yaml.Node) error {
	var m map[string]Cluster
	if err := n.Decode(&m); err != nil {
		return err
	}
	*g = Groups{}
	for k, c := range m {
		if k == "default" {
			g.Default = c
			continue
		}
		if g.Homes == nil {
			g.Homes = map[string]Cluster{}
		}
		g.Homes[k] = c
	}
	return nil
}

// maxExpandedNodes bounds the YAML nodes a config may stand for once its
// aliases are expanded. The key check and the validator walk the document
// through aliases and merge keys (<<: [*a, *a, ...]), so a few hundred bytes
// of nested aliases would otherwise cost them exponential time (a "billion
// laughs" document; config/fuzz_test.go). yaml.v3 bounds aliasing only when
// it decodes into Go values, which parse does after that walk. A config
// with ten thousand topic routes is about 50 000 nodes.
const maxExpandedNodes = 1 << 20

// expandedNodes counts the nodes n stands for with every alias expanded,
// saturating just above maxExpandedNodes. seen memoizes the count of each
// node, so a document costs linear time however much it aliases.
func expandedNodes(n *yaml.Node, seen map[*yaml.Node]int) int {
	if n == nil {
		return 0
	}
	if c, ok := seen[n]; ok {
		return c
	}
	seen[n] = 0 // an alias cycle (yaml.v3 refuses them) counts nothing more
	c := 1
	if n.Kind == yaml.AliasNode {
		c += expandedNodes(n.Alias, seen)
	}
	for _, e := range n.Content {
		c = min(c+expandedNodes(e, seen), maxExpandedNodes+1)
	}
	seen[n] = c
	return c
}

// parse decodes, validates and completes data.
func parse(data []byte) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, err
	}
	var second yaml.Node
	if err := dec.Decode(&second); !errors.Is(err, io.EOF) {
		return nil, errors.New("config holds more than one YAML document; remove everything after the second ---")
	}
	if n := expandedNodes(&doc, map[*yaml.Node]int{}); n > maxExpandedNodes {
		return nil, fmt.Errorf("config expands to more than %d YAML nodes through aliases and merge keys (a \"billion laughs\" document?); write the values out or use fewer nested aliases", maxExpandedNodes)
	}
	root := deref(&doc)
	if root == nil || root.Kind != yaml.MappingNode {
		if root != nil && root.Tag == "!!null" {
			return nil, errors.New("config is empty")
		}
		return nil, fmt.Errorf("line %d: the top level must be a map of keys such as listen, clusters and routes", doc.Line)
	}

	var errs []error
	checkKeys(root, reflect.TypeFor[Config](), nil, &errs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	c := defaults()
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, err
		}
		for _, msg := range te.Errors {
			errs = append(errs, typeError(root, msg))
		}
		return nil, errors.Join(errs...)
	}
	if err := c.validate(root); err != nil {
		return nil, err
	}
	c.deriveDefaults()
	return c, nil
}

// typeErrorRE matches yaml.v3's messages for a value of the wrong type, such
// as "line 5: cannot unmarshal !!int `5` into time.Duration" (the value is
// absent for maps and lists).
var typeErrorRE = regexp.MustCompile("^line ([0-9]+): cannot unmarshal !!([a-z]+)(?: `(.*)`)? into (.+)$")

// typeError turns one of yaml.v3's type error messages into a FieldError
// naming the YAML path and the expected kind of value, when it can find the
// value in the document; otherwise it keeps the message.
func typeError(root *yaml.Node, msg string) error {
	m := typeErrorRE.FindStringSubmatch(msg)
	if m == nil {
		return errors.New(msg)
	}
	line, _ := strconv.Atoi(m[1])
	kind, value, goType := m[2], m[3], m[4]
	p, ok := findValue(root, nil, func(n *yaml.Node) bool {
		if n.Line != line {
			return false
		}
		switch kind {
		case "map":
			return n.Kind == yaml.MappingNode
		case "seq":
			return n.Kind == yaml.SequenceNode
		}
		return n.Kind == yaml.ScalarNode && n.Value == value
	})
	if !ok {
		return errors.New(msg)
	}
	got := map[string]string{"map": "a map", "seq": "a list"}[kind]
	switch {
	case got != "":
	case kind == "str":
		got = strconv.Quote(value)
	default:
		got = value
	}
	want := map[string]string{
		"time.Duration":  "a duration such as 5s or 1500ms",
		"int":            "a whole number",
		"int32":          "a whole number",
		"bool":           "true or false",
		"string":         "a string",
		"config.Cluster": "source or target",
		"[]string":       "a list of strings",
	}[goType]
	if want == "" {
		want = "a map"
		if strings.HasPrefix(goType, "[]") {
			want = "a list"
		}
	}
	return &FieldError{Path: p.String(), Line: line, Msg: fmt.Sprintf("got %s, want %s", got, want)}
}

// findValue returns the path of the first value node under n, in document
// order, for which match is true.
func findValue(n *yaml.Node, p yamlPath, match func(*yaml.Node) bool) (yamlPath, bool) {
	n = deref(n)
	if n == nil {
		return nil, false
	}
	if len(p) > 0 && match(n) {
		return p, true
	}
	var found yamlPath
	switch n.Kind {
	case yaml.MappingNode:
		forEachPair(n, func(k, v *yaml.Node) {
			if found == nil {
				found, _ = findValue(v, p.key(k.Value), match)
			}
		})
	case yaml.SequenceNode:
		for i, e := range n.Content {
			if found, _ = findValue(e, p.index(i), match); found != nil {
				break
			}
		}
	}
	return found, found != nil
}
