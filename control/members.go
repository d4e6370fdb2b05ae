package control

// The multi-instance mode's membership (config `control:`, docs/ha.md):
// this instance joins the membership group on the control cluster and
// feeds every view the group agrees on into the proxy, which derives the
// virtual brokers, partition leaders and coordinators from it
// (proxy/instances.go).

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/membership"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/secure"
)

// leaveDrainTimeout bounds how long a closing instance waits, after it left
// the group, for the requests it already read to be answered.
const leaveDrainTimeout = 5 * time.Second

// instances is this instance's part in the membership group: the group,
// its client of the control cluster, and the goroutine (follow) that
// copies each view into the proxy. Instance owns it; close stops all three.
type instances struct {
	log   hclog.Logger
	srv   *proxy.Server
	self  membership.Member
	group string
	// session is the membership session timeout: the longest the others
	// take to drop this instance, so the longest a handover can take.
	session time.Duration
	cl      *kgo.Client
	grp     *membership.Group
	cancel  context.CancelFunc
	done    chan struct{} // closed when follow returns

	// onView runs after each view is installed (the copy's Reassign:
	// each replicated partition is copied where it is led); nil until
	// the controller exists (setOnView).
	onView atomic.Pointer[func()]
}

// setOnView installs f and runs it once (a view may have come before).
func (in *instances) setOnView(f func()) {
	in.onView.Store(&f)
	f()
}

func (in *instances) viewInstalled() {
	if f := in.onView.Load(); f != nil {
		(*f)()
	}
}

// joinInstances joins the membership group of cfg.Control. Until the first
// view the proxy has none and serves as the only instance it knows of
// (itself), so that the first view is compared with nothing and every
// partition it gives this instance counts as gained (fresh producer
// sessions: proxy/instances.go).
func joinInstances(cfg *config.Config, srv *proxy.Server, log hclog.Logger) (*instances, error) {
	ct := cfg.Control
	adv, ls := srv.AdvertisedListeners()
	self := membership.Member{ID: cfg.Instance.ID, NodeID: membership.NodeID(cfg.Instance.ID), Advertise: adv}
	if len(ls) > 1 {
		self.Listeners = ls
	}
	cl, err := secure.Client(cfg, ct.Cluster)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	grp, err := membership.Join(ctx, cl, membership.Config{
		Group: ct.Group, Self: self, SessionTimeout: ct.SessionTimeout, Logger: log,
	})
	if err != nil {
		cancel()
		cl.Close()
		return nil, err
	}
	session := ct.SessionTimeout
	if session <= 0 {
		session = config.DefaultControlSessionTimeout
	}
	in := &instances{log: log.Named("instances"), srv: srv, self: self, group: ct.Group, session: session, cl: cl, grp: grp, cancel: cancel, done: make(chan struct{})}
	go in.follow(ctx)
	return in, nil
}

// follow installs every view the group agrees on until ctx ends.
func (in *instances) follow(ctx context.Context) {
	defer close(in.done)
	for {
		changed := in.grp.Changed()
		if v, ok := in.grp.View(); ok {
			if err := in.srv.SetInstances(&proxy.Instances{Self: in.self.ID, LeaderID: v.LeaderID, Members: v.Members}); err != nil {
				// Another instance advertises an address that does not
				// parse: keep the last view rather than drop everyone.
				in.log.Error("membership view refused; keeping the previous one", "generation", v.Generation, "error", err)
			} else {
				in.viewInstalled()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// InstancesStatus is the membership as /status shows it.
type InstancesStatus struct {
	Self  string `json:"self"`
	Group string `json:"group"`
	// Formed is false until the group agreed on a first view; meanwhile
	// this instance serves as the only one it knows.
	Formed     bool                `json:"formed"`
	Generation int32               `json:"generation"`
	Leader     string              `json:"leader"`
	Members    []membership.Member `json:"members"`
}

func (in *instances) status() *InstancesStatus {
	v, ok := in.grp.View()
	return &InstancesStatus{Self: in.self.ID, Group: in.group, Formed: ok, Generation: v.Generation, Leader: v.LeaderID, Members: v.Members}
}

// leave leaves the group, so the others take this instance's partitions
// and groups at once; from then on this instance leads nothing (produce
// and fetch are refused with NOT_LEADER_OR_FOLLOWER, Metadata names the
// others as leaders and still lists this instance as a broker), and it waits, before the caller closes the listeners and
// connections, until the others have agreed on a view without it
// (handedOver) and for the requests it already read to be answered.
func (in *instances) leave() {
	in.cancel()
	<-in.done
	last, _ := in.grp.View()
	ctx, cancel := context.WithTimeout(context.Background(), leaveDrainTimeout)
	defer cancel()
	left := true
	if err := in.grp.Close(ctx); err != nil {
		left = false
		in.log.Warn("leaving the membership group failed; the others take over after the session timeout", "error", err)
	}
	var others []membership.Member
	for _, m := range last.Members {
		if m.ID != in.self.ID {
			others = append(others, m)
		}
	}
	leader := last.LeaderID
	if leader == in.self.ID {
		leader = ""
	}
	// This instance stays listed as a broker while it hands over, but
	// leads and coordinates nothing (Leaving): clients find every
	// partition and group on the others and are told so here. An empty
	// view (this was the last instance) leaves every partition without a
	// leader here too; clients retry until an instance returns.
	_ = in.srv.SetInstances(&proxy.Instances{Self: in.self.ID, LeaderID: leader, Members: last.Members, Leaving: in.self.ID})
	// Leading nothing, it copies nothing: its copies stop (and save
	// their maps) before the others' InitProducerId would fence them.
	in.viewInstalled()
	if left {
		in.handedOver(len(others))
	}
	drain, stop := context.WithTimeout(context.Background(), leaveDrainTimeout)
	defer stop()
	in.srv.Drain(drain)
	in.cl.Close()
}

// handedOver waits, at most the session timeout, until the membership
// group is stable again with at most others members: the others have
// rejoined without this instance and install a view that names another
// coordinator and other leaders for what this instance served. Until then
// (0.5-2 s on real Kafka) they still send clients here (FindCoordinator,
// Metadata), so this instance keeps listening and answers NOT_COORDINATOR
// and NOT_LEADER_OR_FOLLOWER, and the clients ask again. Closed earlier,
// those clients met a refused connection instead: a consumer's heartbeats
// and offset commits spent their retries on the stopped instance's port,
// and a second fault in that window (TestThreeInstancesOnRealKafka's kill)
// ended the group session without a commit (issue 14).
func (in *instances) handedOver(others int) {
	ctx, cancel := context.WithTimeout(context.Background(), in.session)
	defer cancel()
	for {
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{in.group}
		resp, err := req.RequestWith(ctx, in.cl)
		if err == nil && len(resp.Groups) == 1 {
			g := resp.Groups[0]
			if err := kerr.ErrorForCode(g.ErrorCode); err != nil && !kerr.IsRetriable(err) {
				return // no group to wait for (deleted, or not ours to describe)
			}
			if g.ErrorCode == 0 && (g.State == "Stable" || g.State == "Empty" || g.State == "Dead") && len(g.Members) <= others {
				return
			}
		}
		select {
		case <-ctx.Done():
			in.log.Warn("the other instances did not settle on a view without this one before the session timeout; closing anyway", "group", in.group)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// memberIDs and viewChanged are the membership as the coordinated flip
// reads it (coordflip.go).
func (in *instances) memberIDs() ([]string, bool) {
	v, ok := in.grp.View()
	if !ok {
		return nil, false
	}
	ids := make([]string, 0, len(v.Members))
	for _, m := range v.Members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids, true
}

func (in *instances) viewChanged() <-chan struct{} { return in.grp.Changed() }
