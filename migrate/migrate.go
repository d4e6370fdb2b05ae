// Package migrate walks a migration manifest: waves of topics, each moved
// to the target in steps (canary percentages of their consumers' fetches,
// then the flip, then the consumer groups' homes), by editing the config
// file a running kproxy watches and waiting, between steps, for kproxy's
// admin API to say the step took effect (/status) and the next one may go
// (the gates of POST /plan).
//
// The walk keeps no state of its own: whether a step is done is read from
// the config file and /status each time, so `kproxy migrate apply` after a
// crash (of the tool or of kproxy) resumes at the first step not done.
//
// Contract for callers (cmd/kproxy): Load a Manifest, build a Runner with
// an Admin (HTTPAdmin, or a fake in tests), call Plan or Apply; output is
// plain lines on the Runner's writer.
package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
	"github.com/kproxy/kproxy/statefile"
)

// Manifest is the migration: waves walked in order.
type Manifest struct {
	// Waves are walked one after the other; a wave starts once the
	// previous one is complete.
	Waves []Wave `yaml:"waves"`
}

// Wave is a set of topics (and the groups that consume them) moved
// together.
type Wave struct {
	// Name labels the wave in output. Default "wave N".
	Name string `yaml:"name"`
	// Topics are the topics moved to the target: exact names, or globs
	// ("orders-*") expanded when the tool runs against the topics the
	// running kproxy knows (Expand). Default none.
	Topics []string `yaml:"topics"`
	// Canary lists percentages (1 to 99, increasing) of the topics'
	// consumers (by client.id) whose fetches go to the target before the
	// flip. Default none.
	Canary []int `yaml:"canary"`
	// Soak is how long each canary step runs before the next step.
	// Default 0.
	Soak time.Duration `yaml:"soak"`
	// Groups are consumer groups whose home moves to the target after the
	// flip. Default none.
	Groups []string `yaml:"groups"`
}

// Load reads and checks a manifest file.
func Load(path string) (*Manifest, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	if len(m.Waves) == 0 {
		errs = append(errs, errors.New("waves: at least one wave is needed"))
	}
	for i := range m.Waves {
		w := &m.Waves[i]
		if w.Name == "" {
			w.Name = fmt.Sprintf("wave %d", i+1)
		}
		if len(w.Topics) == 0 && len(w.Groups) == 0 {
			errs = append(errs, fmt.Errorf("waves[%d] (%s): no topics and no groups", i, w.Name))
		}
		for _, t := range w.Topics {
			if config.GlobLength(t) < 0 {
				errs = append(errs, fmt.Errorf("waves[%d] (%s): topic pattern %q is malformed", i, w.Name, t))
			}
		}
		prev := 0
		for _, p := range w.Canary {
			if p <= prev || p >= 100 {
				errs = append(errs, fmt.Errorf("waves[%d] (%s): canary steps must increase within 1..99, got %v", i, w.Name, w.Canary))
				break
			}
			prev = p
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", path, errors.Join(errs...))
	}
	return &m, nil
}

// Expand returns the manifest with each topic glob replaced by the known
// topics it matches, sorted. known is what the running kproxy knows
// (KnownTopics). A glob never takes the clusters' internal ("__") topics,
// nor a topic that a wave names or matches before it (a topic moves with
// the first wave that claims it); a glob that matches nothing is an error,
// so that a typo cannot turn a wave into a no-op. Exact names stay as they
// are. Each line of the expansion is written to out.
func (m *Manifest) Expand(known []string, out io.Writer) (*Manifest, error) {
	claimed := map[string]bool{}
	for _, w := range m.Waves {
		for _, t := range w.Topics {
			if !config.IsGlob(t) {
				claimed[t] = true
			}
		}
	}
	known = slices.Sorted(slices.Values(known))
	x := &Manifest{Waves: make([]Wave, len(m.Waves))}
	var errs []error
	for i, w := range m.Waves {
		w.Topics = nil
		for _, t := range m.Waves[i].Topics {
			if !config.IsGlob(t) {
				if !slices.Contains(w.Topics, t) {
					w.Topics = append(w.Topics, t)
				}
				continue
			}
			var matched []string
			for _, k := range known {
				if ok, _ := path.Match(t, k); ok && !strings.HasPrefix(k, "__") && !claimed[k] && !slices.Contains(w.Topics, k) {
					matched = append(matched, k)
				}
			}
			if len(matched) == 0 {
				errs = append(errs, fmt.Errorf("%s: topic glob %q matches no topic kproxy knows that no earlier wave takes", w.Name, t))
				continue
			}
			fmt.Fprintf(out, "%s: %s matches %s\n", w.Name, t, strings.Join(matched, ", "))
			w.Topics = append(w.Topics, matched...)
		}
		for _, t := range w.Topics {
			claimed[t] = true
		}
		x.Waves[i] = w
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return x, nil
}

// KnownTopics is every topic name a /status answer shows: the exact route
// names, the topics clients used, the replicated topics and the cutovers.
func KnownTopics(d control.StatusDoc) []string {
	seen := map[string]bool{}
	for _, r := range d.Routes {
		if !config.IsGlob(r.Pattern) {
			seen[r.Pattern] = true
		}
	}
	for _, t := range d.Topics {
		seen[t.Topic] = true
	}
	for _, t := range d.Replication.Topics {
		seen[t] = true
	}
	for _, c := range d.Cutovers {
		seen[c.Topic] = true
	}
	delete(seen, "")
	return slices.Sorted(maps.Keys(seen))
}

// expanded is the runner's manifest with its globs expanded against st.
func (r *Runner) expanded(st control.StatusDoc) (*Manifest, error) {
	m, err := r.Manifest.Expand(KnownTopics(st), r.Out)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return m, nil
}

// Step kinds.
const (
	StepCanary = "canary"
	StepFlip   = "flip"
	StepGroups = "groups"
)

// Step is one config edit of a wave.
type Step struct {
	Wave    string
	Kind    string
	Percent int // canary
	Topics  []string
	Groups  []string
	Soak    time.Duration
}

func (s Step) String() string {
	switch s.Kind {
	case StepCanary:
		return fmt.Sprintf("%s: canary %d%% of the consumers of %s read the target", s.Wave, s.Percent, strings.Join(s.Topics, ", "))
	case StepFlip:
		return fmt.Sprintf("%s: flip %s to the target", s.Wave, strings.Join(s.Topics, ", "))
	default:
		return fmt.Sprintf("%s: move the home of groups %s to the target", s.Wave, strings.Join(s.Groups, ", "))
	}
}

// Steps lists a manifest's steps in order.
func (m *Manifest) Steps() []Step {
	var out []Step
	for _, w := range m.Waves {
		if len(w.Topics) > 0 {
			for _, p := range w.Canary {
				out = append(out, Step{Wave: w.Name, Kind: StepCanary, Percent: p, Topics: w.Topics, Soak: w.Soak})
			}
			out = append(out, Step{Wave: w.Name, Kind: StepFlip, Topics: w.Topics})
		}
		if len(w.Groups) > 0 {
			out = append(out, Step{Wave: w.Name, Kind: StepGroups, Groups: w.Groups})
		}
	}
	return out
}

// Admin is what the walk needs of kproxy's admin API.
type Admin interface {
	Status(ctx context.Context) (control.StatusDoc, error)
	Plan(ctx context.Context, candidate []byte) (control.PlanDoc, error)
}

// Runner walks a manifest against one config file and one kproxy.
type Runner struct {
	Manifest   *Manifest
	ConfigPath string
	Admin      Admin
	Out        io.Writer
	// Poll is how often /status is read while waiting (default 1s);
	// Timeout bounds each wait (default 10m).
	Poll, Timeout time.Duration
	// sleep waits (tests replace it).
	sleep func(context.Context, time.Duration) error
}

func (r *Runner) defaults() {
	if r.Poll <= 0 {
		r.Poll = time.Second
	}
	if r.Timeout <= 0 {
		r.Timeout = 10 * time.Minute
	}
	if r.sleep == nil {
		r.sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
}

// done says whether a step has taken effect: the config file has its edit
// and kproxy's /status shows it applied (canary in the topic's rule,
// cutover flipped onto the target, group moved).
func done(s Step, d control.StatusDoc) (bool, string) {
	rules := map[string]control.TopicStatus{}
	for _, r := range d.Routes {
		rules[r.Pattern] = control.TopicStatus{Topic: r.Pattern, Rule: r}
	}
	switch s.Kind {
	case StepCanary, StepFlip:
		for _, t := range s.Topics {
			r, ok := rules[t]
			flipped := ok && r.Rule.Produce == config.Target && r.Rule.Fetch == config.Target
			if flipped {
				for _, c := range d.Cutovers {
					if c.Topic == t && (c.State != "flipped" || c.Home != string(config.Target)) {
						return false, fmt.Sprintf("%s: cutover %s (%s)", t, c.State, c.Reason)
					}
				}
				continue // a flipped topic is past every canary step
			}
			if s.Kind == StepFlip {
				return false, t + " is not routed to the target yet"
			}
			if !ok || r.Rule.Canary == nil || r.Rule.Canary.Fetch != config.Target || r.Rule.Canary.Percent < s.Percent {
				return false, fmt.Sprintf("%s has no canary of %d%% to the target yet", t, s.Percent)
			}
		}
		return true, ""
	default:
		for _, g := range s.Groups {
			moved := false
			for _, m := range d.GroupMoves {
				if m.Group == g && m.To == string(config.Target) {
					if m.State != "moved" {
						return false, fmt.Sprintf("group %s: move %s (%s)", g, m.State, m.Reason)
					}
					moved = true
				}
			}
			if !moved {
				return false, "group " + g + " has not moved to the target yet"
			}
		}
		return true, ""
	}
}

// Plan prints every step, done or pending, and the gates the next flip
// would meet now.
func (r *Runner) Plan(ctx context.Context) error {
	r.defaults()
	st, err := r.Admin.Status(ctx)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(r.ConfigPath)
	if err != nil {
		return err
	}
	m, err := r.expanded(st)
	if err != nil {
		return err
	}
	next := -1
	for i, s := range m.Steps() {
		ok, why := done(s, st)
		mark := "done   "
		if !ok {
			mark = "pending"
			if next < 0 {
				next = i
				why = "next: " + why
			}
		}
		fmt.Fprintf(r.Out, "%s  %d. %s\n", mark, i+1, s)
		if !ok && i == next {
			fmt.Fprintf(r.Out, "           %s\n", why)
			edited, err := edit(raw, s)
			if err != nil {
				return err
			}
			pl, err := r.Admin.Plan(ctx, edited)
			if err != nil {
				return fmt.Errorf("POST /plan for step %d: %w", i+1, err)
			}
			printGates(r.Out, pl)
		}
	}
	if next < 0 {
		fmt.Fprintln(r.Out, "every step is done")
	}
	return nil
}

func printGates(w io.Writer, pl control.PlanDoc) {
	for _, a := range pl.Actions {
		for _, g := range a.Gates {
			res := "pass"
			if !g.Pass {
				res = "FAIL"
			}
			fmt.Fprintf(w, "           gate %s %s %s: %s\n", a.Subject, g.Gate, res, g.Measured)
		}
	}
}

// Apply walks the steps not done yet: for each, the edited config is
// planned (POST /plan; a flip waits until every gate passes), written
// atomically, and awaited in /status. With dryRun it prints what it would
// do and edits nothing.
//
// Globs are expanded once, at the start: a topic created while the walk
// runs joins it at the next run (a resumed walk expands again).
func (r *Runner) Apply(ctx context.Context, dryRun bool) error {
	r.defaults()
	st, err := r.Admin.Status(ctx)
	if err != nil {
		return err
	}
	m, err := r.expanded(st)
	if err != nil {
		return err
	}
	for i, s := range m.Steps() {
		st, err := r.Admin.Status(ctx)
		if err != nil {
			return err
		}
		if ok, _ := done(s, st); ok {
			fmt.Fprintf(r.Out, "step %d done already: %s\n", i+1, s)
			continue
		}
		raw, err := os.ReadFile(r.ConfigPath)
		if err != nil {
			return err
		}
		edited, err := edit(raw, s)
		if err != nil {
			return err
		}
		if dryRun {
			fmt.Fprintf(r.Out, "step %d would edit %s: %s\n", i+1, r.ConfigPath, s)
			pl, err := r.Admin.Plan(ctx, edited)
			if err != nil {
				return fmt.Errorf("POST /plan for step %d: %w", i+1, err)
			}
			printGates(r.Out, pl)
			fmt.Fprintln(r.Out, "dry run: stopping before the first edit")
			return nil
		}
		if err := r.waitGates(ctx, i, s, edited); err != nil {
			return err
		}
		if !bytes.Equal(raw, edited) {
			if err := statefile.WriteAtomic(r.ConfigPath, edited, 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", r.ConfigPath, err)
			}
		}
		fmt.Fprintf(r.Out, "step %d: %s: config written, waiting for kproxy\n", i+1, s)
		if err := r.waitDone(ctx, s, st.Generation); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s, err)
		}
		fmt.Fprintf(r.Out, "step %d done: %s\n", i+1, s)
		if s.Kind == StepCanary && s.Soak > 0 {
			fmt.Fprintf(r.Out, "soaking %s\n", s.Soak)
			if err := r.sleep(ctx, s.Soak); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(r.Out, "every step is done")
	return nil
}

// waitGates plans the edited config until it passes: a refused reload
// fails at once, a failing gate is measured again until Timeout.
func (r *Runner) waitGates(ctx context.Context, i int, s Step, edited []byte) error {
	deadline := time.Now().Add(r.Timeout)
	for {
		pl, err := r.Admin.Plan(ctx, edited)
		if err != nil {
			return fmt.Errorf("POST /plan for step %d: %w", i+1, err)
		}
		if len(pl.Restart) > 0 {
			return fmt.Errorf("step %d: kproxy would refuse the edited config (needs a restart: %v)", i+1, pl.Restart)
		}
		if pl.Pass {
			return nil
		}
		var failed []string
		for _, a := range pl.Actions {
			for _, g := range a.Gates {
				if !g.Pass {
					failed = append(failed, fmt.Sprintf("%s %s: %s", a.Subject, g.Gate, g.Measured))
				}
			}
		}
		slices.Sort(failed)
		if time.Now().After(deadline) {
			return fmt.Errorf("step %d (%s): gates still fail after %s: %s", i+1, s, r.Timeout, strings.Join(failed, "; "))
		}
		fmt.Fprintf(r.Out, "step %d waits for gates: %s\n", i+1, strings.Join(failed, "; "))
		if err := r.sleep(ctx, r.Poll); err != nil {
			return err
		}
	}
}

// waitDone polls /status until the step shows applied; a rejected reload,
// an aborted or refused cutover or a failed group move ends the wait.
func (r *Runner) waitDone(ctx context.Context, s Step, gen int64) error {
	deadline := time.Now().Add(r.Timeout)
	for {
		st, err := r.Admin.Status(ctx)
		if err != nil {
			return err
		}
		if st.LastReloadErr != "" && st.Generation == gen {
			return fmt.Errorf("kproxy rejected the edited config: %s", st.LastReloadErr)
		}
		ok, why := done(s, st)
		if ok {
			return nil
		}
		for _, bad := range []string{"cutover aborted", "cutover refused", "move failed"} {
			if strings.Contains(why, bad) {
				return errors.New(why)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not applied after %s: %s", r.Timeout, why)
		}
		if err := r.sleep(ctx, r.Poll); err != nil {
			return err
		}
	}
}
