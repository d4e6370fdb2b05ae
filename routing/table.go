package routing

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"slices"

	"github.com/kproxy/kproxy/config"
)

// Direction is the kind of request being routed.
type Direction int

const (
	// Produce routes writes to a topic.
	Produce Direction = iota
	// Fetch routes reads of a topic; only fetches are subject to canaries.
	Fetch
)

func (d Direction) String() string {
	switch d {
	case Produce:
		return "produce"
	case Fetch:
		return "fetch"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Table is an immutable route table built from one config. The zero Table is
// not usable; build one with NewTable.
type Table struct {
	def         config.Cluster
	exact       map[string]*rule
	globs       []*rule // in precedence order: longest first, then by pattern
	groupDef    config.Cluster
	groupExact  map[string]config.Cluster
	groupGlobs  []groupGlob // in precedence order
	replExact   map[string]bool
	replGlobs   []string
	sortedRules []RuleView // for Rules, built once
}

// rule is one routes.topics entry.
type rule struct {
	pattern string
	produce config.Cluster
	fetch   config.Cluster
	canary  *canary
}

type canary struct {
	fetch   config.Cluster
	clients []string
	groups  []string
	percent uint32
}

type groupGlob struct {
	pattern string
	home    config.Cluster
}

// NewTable builds the route table of cfg. Configs from config.Parse always
// succeed; the checks here catch hand-built configs with an unknown cluster
// name or a malformed glob. A topic route's unset Produce or Fetch falls back
// as config.TopicRoute.Effective says.
func NewTable(cfg *config.Config) (*Table, error) {
	if cfg == nil {
		return nil, errors.New("routing: nil config")
	}
	var errs []error
	cluster := func(where string, c config.Cluster) config.Cluster {
		if !c.Valid() {
			errs = append(errs, fmt.Errorf("routing: %s: unknown cluster %q (want source or target)", where, c))
		}
		return c
	}
	glob := func(where, pattern string) {
		if _, err := path.Match(pattern, ""); err != nil {
			errs = append(errs, fmt.Errorf("routing: %s: invalid glob %q: %w", where, pattern, err))
		}
	}

	t := &Table{
		def:        cluster("routes.default", cfg.Routes.Default),
		exact:      map[string]*rule{},
		groupDef:   cluster("groups.default", cfg.Groups.Default),
		groupExact: map[string]config.Cluster{},
		replExact:  map[string]bool{},
	}
	for name, r := range cfg.Routes.Topics {
		where := "routes.topics." + name
		produce, fetch := r.Effective(cfg.Routes.Default)
		ru := &rule{
			pattern: name,
			produce: cluster(where+".produce", produce),
			fetch:   cluster(where+".fetch", fetch),
		}
		if k := r.Canary; k != nil {
			ru.canary = &canary{
				fetch:   cluster(where+".canary.fetch", k.Fetch),
				clients: slices.Clone(k.Clients),
				groups:  slices.Clone(k.Groups),
				percent: uint32(max(0, min(k.Percent, 100))),
			}
			for _, g := range k.Clients {
				glob(where+".canary.clients", g)
			}
			for _, g := range k.Groups {
				glob(where+".canary.groups", g)
			}
		}
		if config.IsGlob(name) {
			glob(where, name)
			t.globs = append(t.globs, ru)
		} else {
			t.exact[name] = ru
		}
		t.sortedRules = append(t.sortedRules, ru.view())
	}
	for name, home := range cfg.Groups.Homes {
		home = cluster("groups."+name, home)
		if config.IsGlob(name) {
			glob("groups."+name, name)
			t.groupGlobs = append(t.groupGlobs, groupGlob{name, home})
		} else {
			t.groupExact[name] = home
		}
	}
	for _, name := range cfg.Replicate {
		if config.IsGlob(name) {
			glob("replicate", name)
			t.replGlobs = append(t.replGlobs, name)
		} else {
			t.replExact[name] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(t.globs, func(a, b *rule) int { return byPrecedence(a.pattern, b.pattern) })
	slices.SortFunc(t.groupGlobs, func(a, b groupGlob) int { return byPrecedence(a.pattern, b.pattern) })
	slices.SortFunc(t.sortedRules, func(a, b RuleView) int { return cmp.Compare(a.Pattern, b.Pattern) })
	return t, nil
}

// byPrecedence orders globs longest first, ties by pattern so the order is
// deterministic even for a hand-built config with ambiguous globs.
func byPrecedence(a, b string) int {
	return cmp.Or(cmp.Compare(config.GlobLength(b), config.GlobLength(a)), cmp.Compare(a, b))
}

// match reports whether name matches the pre-validated glob pattern.
func match(pattern, name string) bool {
	return config.MatchGlob(pattern, name)
}

// lookup returns the rule for topic, or nil when routes.default applies.
func (t *Table) lookup(topic string) *rule {
	if r, ok := t.exact[topic]; ok {
		return r
	}
	for _, r := range t.globs {
		if match(r.pattern, topic) {
			return r
		}
	}
	return nil
}

// Route returns the cluster that serves dir requests for topic from the
// client with clientID, in consumer group group ("" when unknown). A topic's
// canary can redirect fetches only. It panics on a Direction other than
// Produce or Fetch, which is a programming error.
func (t *Table) Route(topic string, dir Direction, clientID, group string) config.Cluster {
	r := t.lookup(topic)
	switch dir {
	case Produce:
		if r == nil {
			return t.def
		}
		return r.produce
	case Fetch:
		if r == nil {
			return t.def
		}
		if r.canary != nil && r.canary.selects(clientID, group) {
			return r.canary.fetch
		}
		return r.fetch
	}
	panic(fmt.Sprintf("routing: Route called with unknown %v", dir))
}

// FetchBase returns topic's fetch route for consumers its canary does not
// select, and whether it has a canary at all: a topic without one is
// fetched from the same cluster by every consumer, so an answer built from
// the base routes holds for any client (proxy's shared Metadata answers).
func (t *Table) FetchBase(topic string) (config.Cluster, bool) {
	r := t.lookup(topic)
	if r == nil {
		return t.def, false
	}
	return r.fetch, r.canary != nil
}

// selects reports whether the consumer is in the canary.
func (k *canary) selects(clientID, group string) bool {
	if clientID != "" {
		for _, g := range k.clients {
			if match(g, clientID) {
				return true
			}
		}
	}
	if group != "" {
		for _, g := range k.groups {
			if match(g, group) {
				return true
			}
		}
	}
	return k.percent > 0 && Bucket(clientID) < k.percent
}

// Bucket is the canary bucket, 0 to 99, of a client.id: FNV-1a 32 of its bytes
// modulo 100. A canary of percent p selects the buckets below p, so raising p
// only ever adds clients. Exported for status displays and tests; changing it
// would move clients between sides of every running canary.
func Bucket(clientID string) uint32 {
	// FNV-1a, 32 bit, inline: hash/fnv would allocate on every fetch.
	h := uint32(2166136261)
	for i := 0; i < len(clientID); i++ {
		h ^= uint32(clientID[i])
		h *= 16777619
	}
	return h % 100
}

// GroupHome returns the cluster that coordinates consumer group group.
func (t *Table) GroupHome(group string) config.Cluster {
	if home, ok := t.groupExact[group]; ok {
		return home
	}
	for _, g := range t.groupGlobs {
		if match(g.pattern, group) {
			return g.home
		}
	}
	return t.groupDef
}

// Default returns routes.default, where topics without a matching entry go.
func (t *Table) Default() config.Cluster { return t.def }

// Replicated reports whether topic is listed, by name or glob, in replicate.
func (t *Table) Replicated(topic string) bool {
	if t.replExact[topic] {
		return true
	}
	for _, g := range t.replGlobs {
		if match(g, topic) {
			return true
		}
	}
	return false
}

// RuleView is the effective route of a topic, for status displays.
type RuleView struct {
	// Pattern is the routes.topics key that applies: the exact name or the
	// winning glob; "" when routes.default applies.
	Pattern string `json:"pattern"`
	// Glob reports whether Pattern is a glob.
	Glob bool `json:"glob"`
	// Produce and Fetch are where the topic's requests go (Fetch for
	// consumers outside the canary).
	Produce config.Cluster `json:"produce"`
	Fetch   config.Cluster `json:"fetch"`
	// Canary is a copy of the topic's canary; nil when it has none.
	Canary *config.Canary `json:"canary,omitempty"`
}

func (r *rule) view() RuleView {
	v := RuleView{Pattern: r.pattern, Glob: config.IsGlob(r.pattern), Produce: r.produce, Fetch: r.fetch}
	if k := r.canary; k != nil {
		v.Canary = &config.Canary{
			Fetch:   k.fetch,
			Clients: slices.Clone(k.clients),
			Groups:  slices.Clone(k.groups),
			Percent: int(k.percent),
		}
	}
	return v
}

// TopicRule returns the rule that applies to topic.
func (t *Table) TopicRule(topic string) RuleView {
	if r := t.lookup(topic); r != nil {
		return r.view()
	}
	return RuleView{Produce: t.def, Fetch: t.def}
}

// Rules returns every routes.topics entry, sorted by pattern. The caller may
// modify the result.
func (t *Table) Rules() []RuleView {
	out := make([]RuleView, len(t.sortedRules))
	for i, v := range t.sortedRules {
		if v.Canary != nil {
			k := *v.Canary
			k.Clients, k.Groups = slices.Clone(k.Clients), slices.Clone(k.Groups)
			v.Canary = &k
		}
		out[i] = v
	}
	return out
}
