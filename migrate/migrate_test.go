package migrate

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
	"github.com/kproxy/kproxy/routing"
)

const baseConfig = `# kproxy for the payments migration
listen: 127.0.0.1:9092
admin: 127.0.0.1:9644
state_dir: /var/lib/kproxy
clusters:
  source: { bootstrap: [src:9092] }
  target: { bootstrap: [tgt:9092] }
routes:
  default: source
  topics:
    payments: source # keep until wave 1
replicate: [orders, payments, audit]
groups:
  default: source
`

const manifestText = `waves:
  - name: first
    topics: [orders, payments]
    canary: [10, 50]
    soak: 1m
    groups: [billing]
  - topics: [audit]
`

// fakeAdmin answers /status from the config file as kproxy would once it
// has applied it (cutovers flipped unless abort names the topic, groups
// moved), and /plan with gates that fail failGates times first.
type fakeAdmin struct {
	t         *testing.T
	path      string
	failGates int
	abort     string
	planErr   error
	gen       int64
	lastHash  string
	applied   []string // the config generations' route summaries, in order
}

func (f *fakeAdmin) Status(ctx context.Context) (control.StatusDoc, error) {
	cfg, err := config.Load(f.path)
	if err != nil {
		f.t.Fatalf("the walk wrote an invalid config: %v", err)
	}
	if cfg.Hash() != f.lastHash {
		f.lastHash = cfg.Hash()
		f.gen++
		f.applied = append(f.applied, summary(cfg))
	}
	table, err := routing.NewTable(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	d := control.StatusDoc{Generation: f.gen, Routes: table.Rules()}
	for name, r := range cfg.Routes.Topics {
		if p, _ := r.Effective(cfg.Routes.Default); p == config.Target {
			c := control.CutoverStatus{Topic: name, From: "source", To: "target", Home: "target", State: "flipped"}
			if name == f.abort {
				c.Home, c.State, c.Reason = "source", "aborted", "max_hold expired"
			}
			d.Cutovers = append(d.Cutovers, c)
		}
	}
	for g, home := range cfg.Groups.Homes {
		if home == config.Target {
			d.GroupMoves = append(d.GroupMoves, control.GroupMoveStatus{Group: g, From: "source", To: "target", State: "moved"})
		}
	}
	return d, nil
}

func (f *fakeAdmin) Plan(ctx context.Context, candidate []byte) (control.PlanDoc, error) {
	if f.planErr != nil {
		return control.PlanDoc{}, f.planErr
	}
	cfg, err := config.Parse(candidate)
	if err != nil {
		f.t.Fatalf("planned an invalid candidate: %v", err)
	}
	g := control.GateResult{Gate: "caught_up", Pass: true, Measured: "lag 0 records"}
	if p, _ := cfg.Routes.Topics["orders"].Effective(cfg.Routes.Default); f.failGates > 0 && p == config.Target {
		f.failGates--
		g = control.GateResult{Gate: "caught_up", Pass: false, Measured: "lag 4000 records"}
	}
	return control.PlanDoc{Pass: g.Pass, Actions: []control.PlanAction{{Kind: "cutover", Subject: "orders", Gates: []control.GateResult{g}}}}, nil
}

// summary is one line per applied config: each topic's produce/fetch and
// canary percent, and billing's home.
func summary(cfg *config.Config) string {
	var b strings.Builder
	for _, t := range []string{"orders", "payments", "audit"} {
		r := cfg.Routes.Topics[t]
		p, f := r.Effective(cfg.Routes.Default)
		b.WriteString(t + "=" + string(p) + "/" + string(f))
		if r.Canary != nil {
			b.WriteString("+" + string(r.Canary.Fetch) + strconv.Itoa(r.Canary.Percent))
		}
		b.WriteString(" ")
	}
	b.WriteString("billing=" + string(cfg.Groups.Homes["billing"]))
	return b.String()
}

func setup(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "kproxy.yaml")
	if err := os.WriteFile(path, []byte(baseConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	mpath := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(mpath, []byte(manifestText), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(mpath)
	if err != nil {
		t.Fatal(err)
	}
	return path, m
}

func runner(m *Manifest, path string, a Admin, out *bytes.Buffer) *Runner {
	r := &Runner{Manifest: m, ConfigPath: path, Admin: a, Out: out, Poll: time.Millisecond, Timeout: time.Minute}
	r.sleep = func(context.Context, time.Duration) error { return nil }
	return r
}

// apply walks the waves in order: canary 10%, canary 50%, the flip (after
// its gates pass), the group move, then the next wave; the operator's
// comments stay in the file.
func TestApplyWalksWavesInOrder(t *testing.T) {
	path, m := setup(t)
	fa := &fakeAdmin{t: t, path: path, failGates: 2}
	var out bytes.Buffer
	if err := runner(m, path, fa, &out).Apply(context.Background(), false); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
	want := []string{
		"orders=source/source payments=source/source audit=source/source billing=",
		"orders=source/source+target10 payments=source/source+target10 audit=source/source billing=",
		"orders=source/source+target50 payments=source/source+target50 audit=source/source billing=",
		"orders=target/target payments=target/target audit=source/source billing=",
		"orders=target/target payments=target/target audit=source/source billing=target",
		"orders=target/target payments=target/target audit=target/target billing=target",
	}
	if strings.Join(fa.applied, "\n") != strings.Join(want, "\n") {
		t.Errorf("configs applied:\n%s\nwant:\n%s", strings.Join(fa.applied, "\n"), strings.Join(want, "\n"))
	}
	raw, _ := os.ReadFile(path)
	for _, keep := range []string{"# kproxy for the payments migration", "replicate: [orders, payments, audit]"} {
		if !strings.Contains(string(raw), keep) {
			t.Errorf("the edited config lost %q:\n%s", keep, raw)
		}
	}
	if !strings.Contains(out.String(), "step 3 waits for gates: orders caught_up: lag 4000 records") || !strings.Contains(out.String(), "soaking 1m0s") {
		t.Errorf("output lacks the gate wait or the soak:\n%s", out.String())
	}
}

// After a crash mid-walk (here: kproxy's admin API failing at the flip),
// apply again resumes at the first step /status does not show done,
// without editing the config for the steps already done.
func TestApplyResumesFromStatus(t *testing.T) {
	path, m := setup(t)
	fa := &fakeAdmin{t: t, path: path}
	var out bytes.Buffer
	r := runner(m, path, fa, &out)
	calls := 0
	r.Admin = planFailsAt{fakeAdmin: fa, at: 3, calls: &calls}
	if err := r.Apply(context.Background(), false); err == nil {
		t.Fatal("the walk went on past a failing admin API")
	}
	before := len(fa.applied)
	out.Reset()
	r.Admin = fa
	if err := r.Apply(context.Background(), false); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "step 1 done already") || !strings.Contains(out.String(), "step 2 done already") || strings.Contains(out.String(), "step 3 done already") {
		t.Errorf("resume output:\n%s", out.String())
	}
	if got := len(fa.applied) - before; got != 3 {
		t.Errorf("the resumed walk applied %d configs, want 3 (flip, groups, wave 2)", got)
	}
}

type planFailsAt struct {
	*fakeAdmin
	at    int
	calls *int
}

func (p planFailsAt) Plan(ctx context.Context, c []byte) (control.PlanDoc, error) {
	*p.calls++
	if *p.calls >= p.at {
		return control.PlanDoc{}, errors.New("connection refused")
	}
	return p.fakeAdmin.Plan(ctx, c)
}

// --dry-run plans the next step and edits nothing.
func TestApplyDryRunEditsNothing(t *testing.T) {
	path, m := setup(t)
	fa := &fakeAdmin{t: t, path: path}
	var out bytes.Buffer
	if err := runner(m, path, fa, &out).Apply(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if string(raw) != baseConfig {
		t.Errorf("a dry run changed the config:\n%s", raw)
	}
	if !strings.Contains(out.String(), "step 1 would edit") || !strings.Contains(out.String(), "gate orders caught_up pass") {
		t.Errorf("dry run output:\n%s", out.String())
	}
}

// An aborted cutover stops the walk with the cutover's reason.
func TestApplyStopsAtAnAbortedCutover(t *testing.T) {
	path, m := setup(t)
	fa := &fakeAdmin{t: t, path: path, abort: "payments"}
	var out bytes.Buffer
	err := runner(m, path, fa, &out).Apply(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "payments: cutover aborted (max_hold expired)") {
		t.Fatalf("err %v\n%s", err, out.String())
	}
}

// plan lists every step as done or pending and the next step's gates.
func TestPlanShowsDoneAndPending(t *testing.T) {
	path, m := setup(t)
	fa := &fakeAdmin{t: t, path: path}
	var out bytes.Buffer
	r := runner(m, path, fa, &out)
	r.Manifest = &Manifest{Waves: m.Waves[:1]}
	r.Manifest.Waves[0].Canary = []int{10}
	raw, err := edit([]byte(baseConfig), Step{Kind: StepCanary, Percent: 10, Topics: []string{"orders", "payments"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	t.Logf("\n%s", got)
	for _, want := range []string{
		"done     1. first: canary 10% of the consumers of orders, payments read the target",
		"pending  2. first: flip orders, payments to the target",
		"next: orders is not routed to the target yet",
		"gate orders caught_up pass: lag 0 records",
		"pending  3. first: move the home of groups billing to the target",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
}

func TestLoadRejectsBadManifests(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{
		"waves: []\n",
		"waves:\n  - topics: [\"logs[\"]\n",
		"waves:\n  - topics: [a]\n    canary: [50, 10]\n",
		"waves:\n  - topic: [a]\n",
	} {
		p := filepath.Join(dir, "m.yaml")
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// withKnown is fakeAdmin whose /status also shows the replicated topics and
// a client's view of __consumer_offsets, as a running kproxy's does.
type withKnown struct{ *fakeAdmin }

func (w withKnown) Status(ctx context.Context) (control.StatusDoc, error) {
	d, err := w.fakeAdmin.Status(ctx)
	d.Replication.Topics = []string{"audit", "orders", "payments"}
	d.Topics = append(d.Topics, control.TopicStatus{Topic: "__consumer_offsets"})
	return d, err
}

// Topic globs in a manifest are expanded against the topics kproxy knows:
// a topic goes with the first wave that names or matches it, internal
// topics never match, and the walk is the one exact names give.
func TestApplyExpandsTopicGlobs(t *testing.T) {
	path, _ := setup(t)
	mpath := filepath.Join(t.TempDir(), "globs.yaml")
	if err := os.WriteFile(mpath, []byte("waves:\n  - name: first\n    topics: [\"o*\", \"pay*\"]\n    canary: [10, 50]\n    soak: 1m\n    groups: [billing]\n  - topics: [\"*\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(mpath)
	if err != nil {
		t.Fatal(err)
	}
	fa := &fakeAdmin{t: t, path: path}
	var out bytes.Buffer
	if err := runner(m, path, withKnown{fa}, &out).Apply(context.Background(), false); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := []string{
		"orders=source/source payments=source/source audit=source/source billing=",
		"orders=source/source+target10 payments=source/source+target10 audit=source/source billing=",
		"orders=source/source+target50 payments=source/source+target50 audit=source/source billing=",
		"orders=target/target payments=target/target audit=source/source billing=",
		"orders=target/target payments=target/target audit=source/source billing=target",
		"orders=target/target payments=target/target audit=target/target billing=target",
	}
	if strings.Join(fa.applied, "\n") != strings.Join(want, "\n") {
		t.Errorf("configs applied:\n%s\nwant the walk of the exact names:\n%s", strings.Join(fa.applied, "\n"), strings.Join(want, "\n"))
	}
	for _, line := range []string{"first: o* matches orders", "first: pay* matches payments", "wave 2: * matches audit\n"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
	if strings.Contains(out.String(), "__consumer_offsets") {
		t.Errorf("a glob took an internal topic:\n%s", out.String())
	}

	// A glob that matches nothing stops the walk before any edit.
	if _, err := (&Manifest{Waves: []Wave{{Name: "w", Topics: []string{"ledger-*"}}}}).Expand([]string{"orders"}, &out); err == nil || !strings.Contains(err.Error(), `"ledger-*" matches no topic`) {
		t.Errorf("a glob matching nothing: %v", err)
	}
}
