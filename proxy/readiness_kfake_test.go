package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// splitRouter homes topic "moved" and group "g-moved" on the target and
// everything else on the source.
type splitRouter struct{ StaticRouter }

func (splitRouter) ProduceCluster(topic, _ string) string  { return pick(topic == "moved") }
func (splitRouter) FetchCluster(topic, _, _ string) string { return pick(topic == "moved") }
func (splitRouter) GroupCluster(group string) string       { return pick(group == "g-moved") }
func pick(target bool) string {
	if target {
		return Target
	}
	return Source
}

// While the target has never answered, kproxy serves what the source homes
// and answers requests for what the target homes with retriable errors a
// client retries on (never a hang or a fatal code): Metadata for a topic,
// FindCoordinator, JoinGroup and OffsetCommit for a group. ReadyFor says
// ready for the source alone, not ready with the target named. Once the
// target appears, the same requests succeed.
func TestMissingClusterAnswersRetriably(t *testing.T) {
	src := newKfake(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv, err := New(Options{Listen: "127.0.0.1:0", Router: splitRouter{StaticRouter(Source)}, Registerer: prometheus.NewRegistry(),
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: {ln.Addr().String()}},
		Limits:   Limits{StartGrace: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start with the target down: %v", err)
	}
	if ok, why := srv.ReadyFor([]string{Source}); !ok {
		t.Errorf("not ready for the source alone: %s", why)
	}
	if ok, why := srv.ReadyFor([]string{Source, Target}); ok || why == "" {
		t.Errorf("ready with the target down (%q)", why)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	broker := cl.SeedBrokers()[0]
	send := func(req kmsg.Request) kmsg.Response {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		resp, err := broker.Request(rctx, req)
		if err != nil {
			t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
		}
		return resp
	}
	retriable := func(what string, code int16) {
		t.Helper()
		err := kerr.ErrorForCode(code)
		if err == nil || !kerr.IsRetriable(err) {
			t.Errorf("%s with the target down: %v, want a retriable error", what, err)
		}
		t.Logf("%s with the target down: %v", what, err)
	}

	meta := kmsg.NewPtrMetadataRequest()
	for _, name := range []string{"t", "moved"} {
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(name)
		meta.Topics = append(meta.Topics, mt)
	}
	for _, tp := range send(meta).(*kmsg.MetadataResponse).Topics {
		switch *tp.Topic {
		case "t":
			if tp.ErrorCode != 0 || len(tp.Partitions) != 1 {
				t.Errorf("Metadata for the source's topic: %v, %d partitions", kerr.ErrorForCode(tp.ErrorCode), len(tp.Partitions))
			}
		case "moved":
			retriable("Metadata for the target's topic", tp.ErrorCode)
		}
	}

	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorKey = "g-moved"
	fc.CoordinatorKeys = []string{"g-moved"}
	fcResp := send(fc).(*kmsg.FindCoordinatorResponse)
	code := fcResp.ErrorCode
	if len(fcResp.Coordinators) > 0 {
		code = fcResp.Coordinators[0].ErrorCode
	}
	retriable("FindCoordinator for the target's group", code)

	jg := kmsg.NewPtrJoinGroupRequest()
	jg.Group, jg.ProtocolType, jg.SessionTimeoutMillis, jg.RebalanceTimeoutMillis = "g-moved", "consumer", 10000, 10000
	jg.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{0, 0, 0, 0, 0, 0, 0, 0}}}
	retriable("JoinGroup for the target's group", send(jg).(*kmsg.JoinGroupResponse).ErrorCode)

	oc := kmsg.NewPtrOffsetCommitRequest()
	oc.Group, oc.Generation, oc.MemberID = "g-moved", -1, ""
	oct := kmsg.NewOffsetCommitRequestTopic()
	oct.Topic = "moved" // a commit for "t" would go to the source, which has it (group_offsets.go)
	ocp := kmsg.NewOffsetCommitRequestTopicPartition()
	ocp.Offset = 0
	oct.Partitions = append(oct.Partitions, ocp)
	oc.Topics = append(oc.Topics, oct)
	for _, tp := range send(oc).(*kmsg.OffsetCommitResponse).Topics {
		for _, p := range tp.Partitions {
			retriable("OffsetCommit for the target's group", p.ErrorCode)
		}
	}

	// The target appears: kproxy takes it in and the same requests work.
	newKfake(t, kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(1, "moved"))
	waitUntil(t, "ready for both clusters once the target answers", func() bool { ok, _ := srv.ReadyFor([]string{Source, Target}); return ok })
	cl2, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.ConsumerGroup("g-moved"), kgo.ConsumeTopics("moved"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if err := cl2.ProduceSync(ctx, &kgo.Record{Topic: "moved", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("producing to the target's topic once it is up: %v", err)
	}
	fs := cl2.PollRecords(ctx, 1)
	if errs := fs.Errors(); len(errs) > 0 || fs.NumRecords() != 1 {
		t.Fatalf("consuming in the target's group once it is up: %v (%d records)", errs, fs.NumRecords())
	}
	if err := cl2.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("committing in the target's group once it is up: %v", err)
	}
}
