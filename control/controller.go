package control

// The control plane of one kproxy: two-way replication and topic homes
// (replication.go), the cutover controller (cutover.go), the group mover
// (groupmove.go), the admin clients they share (admins.go) and the router
// overlay they pin routes in (router.go). One lifecycle: NewController,
// Start, Apply per reload, Close. Close cancels running cutovers and group
// moves (each releases what it holds to the cluster it came from), waits
// for their goroutines, stops replication, and only then closes the admin
// clients they use.

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/routing"
)

// Controller drives replication, cutovers and group moves from reloads.
// Apply and Start must not be called concurrently with each other (the
// instance serialises reloads).
type Controller struct {
	log    hclog.Logger
	srv    *proxy.Server
	ctx    context.Context
	cancel context.CancelFunc

	repl    *replication
	admins  *clusterAdmins
	overlay *overlay
	cuts    *cutovers
	groups  *groupMoves
	watch   *sourceWatch

	// applyMu serialises Start, Apply and recheck with the source
	// watcher's additions (sync.go); it guards table and cfg.
	applyMu sync.Mutex
	table   *routing.Table // the applied config's routes, under the overlay
	cfg     *config.Config // the applied config
	watchWG sync.WaitGroup // the source watcher
	bypass  *bypassWatch   // writers around kproxy (bypass.go)
	mon     *monitor       // counters' topics, bypass check, progress lines (monitor.go)
	monRuns bool           // Start started mon (Close waits for it)
}

// NewController builds the control plane for srv from the first config and
// installs its router (the config's table) on srv. Nothing runs until Start.
func NewController(log hclog.Logger, srv *proxy.Server, cfg *config.Config, reg prometheus.Registerer) (*Controller, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{log: log, srv: srv, ctx: ctx, cancel: cancel,
		repl: newReplication(log.Named("replicator")), admins: &clusterAdmins{}, overlay: newOverlay(srv)}
	c.overlay.targetReady = c.repl.targetReady
	c.repl.onReady = c.overlay.reinstall
	if cfg.Control != nil {
		c.repl.owns = srv.LeadsInView // restart-only, like control itself
	}
	c.repl.setConfig(cfg)
	dir := ""
	if cfg.StateDir != "" {
		dir = filepath.Join(cfg.StateDir, "cutover")
	}
	ends := adminOffsets{admins: c.admins, cfg: cfg, leaders: &endLeaders{}, freeze: &freezeConns{}}
	cuts, err := newCutovers(ctx, log.Named("cutover"), srv, ends, replicationPort{rp: c.repl, ends: ends}, &fileMarkers{dir: dir}, c.overlay, reg)
	if err != nil {
		cancel()
		return nil, err
	}
	c.cuts = cuts
	c.groups = newGroupMoves(ctx, log.Named("groups"), srv, c.overlay, c.admins, reg)
	c.watch = &sourceWatch{log: log.Named("sync"), metrics: newSyncMetrics(reg), failed: map[string]string{}, seen: map[string]map[string]string{}, retried: map[string]time.Time{}}
	c.bypass = newBypassWatch(log.Named("bypass"), srv, c.repl, c.admins, reg)
	c.mon = newMonitor(log.Named("monitor"), srv, c.repl, c.bypass)
	c.mon.cfg.Store(cfg)
	srv.SetOffsetMaps(c.repl)
	return c, nil
}

// Start applies the first config: replication, then the group homes and
// topic homes kept from the last run against the config.
func (c *Controller) Start(cfg *config.Config, table *routing.Table) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	// Replication first: which copies run decides where routes may point.
	if err := c.repl.apply(cfg); err != nil {
		// Clients are served either way; /status and the log say why
		// replication is not running.
		c.log.Error("replication not started", "error", err)
	}
	// A groups change made while kproxy was down moves those groups now.
	lastGroups, err := c.groups.restore(cfg)
	if err != nil {
		c.log.Error("group homes from the last run not restored; groups are served from the config's homes", "error", err)
	}
	c.groups.apply(cfg, lastGroups, table)
	// Every replicated topic is considered, not only the flipped ones: a
	// config edited while kproxy was down may route a topic away from its
	// home, and that takes a cutover (hold, drain, flip), never a switch.
	c.cuts.apply(cfg, nil, table, c.repl.resolvedTopics())
	c.table, c.cfg = table, cfg
	c.startWatch()
	c.mon.cfg.Store(cfg)
	c.monRuns = true
	go c.mon.run(c.ctx)
}

// Apply installs a reloaded config (already validated; table is its
// routing table).
func (c *Controller) Apply(cfg *config.Config, table *routing.Table) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if err := c.repl.apply(cfg); err != nil {
		c.log.Error("replication not (re)started after reload", "error", err)
	}
	// Group pins first, so the router that serves the new table already
	// keeps a moving group on its old home until its offsets are copied.
	c.groups.apply(cfg, c.table, table)
	// Replicated topics count even if no client has used them yet: their
	// route change is a cutover too.
	c.cuts.apply(cfg, c.table, table, append(c.srv.KnownTopics(), c.repl.resolvedTopics()...))
	c.table, c.cfg = table, cfg
	c.mon.cfg.Store(cfg)
}

// recheck compares every topic with the applied config again (the same
// config and table): after the required-gate refusals changed. Like Apply,
// not concurrent with Apply (the instance holds its lock).
func (c *Controller) recheck(cfg *config.Config) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.cuts.apply(cfg, c.table, c.table, append(c.srv.KnownTopics(), c.repl.resolvedTopics()...))
}

// Close stops the control plane: running cutovers and group moves abort
// (releasing what they hold to where it came from) and are awaited, then
// replication stops and the admin clients close.
func (c *Controller) Close() {
	c.cancel()
	c.watchWG.Wait() // it uses the replication and the admin clients
	c.cuts.wait()
	if cl, ok := c.cuts.markers.(interface{ Close() error }); ok {
		_ = cl.Close() // every flip's line is synced already
	}
	c.groups.wait()
	if c.monRuns {
		<-c.mon.done
	}
	c.repl.stop()
	if ao, ok := c.cuts.ends.(adminOffsets); ok {
		ao.freeze.close()
	}
	c.admins.close()
}

// Cutovers is every topic's cutover, for /status.
func (c *Controller) Cutovers() []CutoverStatus { return c.cuts.list() }

// GroupMoves is every group move, for /status.
func (c *Controller) GroupMoves() []GroupMoveStatus { return c.groups.list() }

// Bypass is the /status section on writers that bypass kproxy.
func (c *Controller) Bypass() BypassStatus {
	return c.bypass.status(c.mon.cfg.Load().Monitor.BypassInterval)
}

// Replication is the replication section of /status.
func (c *Controller) Replication() ReplicationStatus { return c.repl.status() }
