package proxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kproxy/kproxy/config"
)

// With a policy, DeleteTopics from a principal no rule allows gets the
// authorizer's TOPIC_AUTHORIZATION_FAILED and reaches no cluster; a rule
// for the principal lets it through; the denial is counted by principal
// and API.
func TestPolicyDeniesDestructiveAdminAPIs(t *testing.T) {
	r := newSecureRig(t, 0)
	cl := r.client(t, scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism())
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	r.srv.SetPolicy(&Policy{Admin: []AdminRule{{Principals: []string{"ops-*"}, Operations: []string{"*"}}}})
	resp, err := adm.DeleteTopics(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if got := resp["orders"].Err; !errors.Is(got, kerr.TopicAuthorizationFailed) {
		t.Fatalf("delete as %s: %v, want TOPIC_AUTHORIZATION_FAILED", saslUser, got)
	}
	if topics, err := adm.ListTopics(ctx); err != nil || !topics.Has("orders") {
		t.Fatalf("orders gone after a denied delete: %v %v", topics.Names(), err)
	}
	var m dto.Metric
	if err := r.srv.metrics.policyDenials.WithLabelValues(saslUser, "DeleteTopics").Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 1 {
		t.Errorf("denials counted %v, want 1", n)
	}
	if !strings.Contains(r.logs.String(), "request denied by policy") {
		t.Error("the denial is not logged")
	}

	r.srv.SetPolicy(&Policy{Admin: []AdminRule{{Principals: []string{"app*"}, Operations: []string{"delete_topics"}}}})
	if resp, err = adm.DeleteTopics(ctx, "orders"); err != nil || resp["orders"].Err != nil {
		t.Fatalf("delete allowed by a rule: %v %v", err, resp["orders"].Err)
	}
}

// Every governed API has a denial that answers each item of the request,
// and the operation names are the ones config validates.
func TestPolicyDenialsCoverEveryGovernedAPI(t *testing.T) {
	var ops []string
	for key, op := range adminOps {
		ops = append(ops, op)
		req := kmsg.RequestForKey(key)
		req.SetVersion(registry[key].max)
		resp := denyAll(req)
		if resp == nil || resp.Key() != key || resp.GetVersion() != req.GetVersion() {
			t.Errorf("%s: no denial of its own kind and version: %v", kmsg.NameForKey(key), resp)
		}
	}
	slices.Sort(ops)
	want := slices.Clone(config.AdminOperations)
	slices.Sort(want)
	if !slices.Equal(ops, want) {
		t.Errorf("proxy governs %v, config validates %v", ops, want)
	}

	dt := kmsg.NewPtrDeleteRecordsRequest()
	dt.Version = 2
	topic := kmsg.NewDeleteRecordsRequestTopic()
	topic.Topic = "t"
	for p := int32(0); p < 3; p++ {
		part := kmsg.NewDeleteRecordsRequestTopicPartition()
		part.Partition = p
		topic.Partitions = append(topic.Partitions, part)
	}
	dt.Topics = append(dt.Topics, topic)
	got := denyAll(dt).(*kmsg.DeleteRecordsResponse)
	if len(got.Topics) != 1 || len(got.Topics[0].Partitions) != 3 || got.Topics[0].Partitions[2].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Errorf("DeleteRecords denial does not answer each partition: %+v", got.Topics)
	}
}

func TestPolicyPrincipalGlobs(t *testing.T) {
	p := &Policy{Admin: []AdminRule{
		{Principals: []string{"ops-*", "ANONYMOUS"}, Operations: []string{"delete_groups"}},
		{Principals: []string{"admin"}, Operations: []string{"*"}},
	}}
	for _, tc := range []struct {
		principal, op string
		want          bool
	}{
		{"ops-1", "delete_groups", true},
		{"ops-1", "delete_topics", false},
		{"ANONYMOUS", "delete_groups", true},
		{"admin", "alter_configs", true},
		{"administrator", "alter_configs", false},
	} {
		if got := p.allowsAdmin(tc.principal, tc.op); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.principal, tc.op, got, tc.want)
		}
	}
}

// With topic rules, a principal produces and fetches only where a rule
// allows (TOPIC_AUTHORIZATION_FAILED elsewhere, nothing sent upstream),
// and Metadata hides the topics it may not describe.
func TestPolicyGovernsTopics(t *testing.T) {
	r := newSecureRig(t, 0)
	r.srv.SetPolicy(&Policy{Topics: []TopicRule{
		{Principals: []string{"app*"}, Topics: []string{"ord*"}, Operations: []string{"*"}},
		{Principals: []string{"app*"}, Topics: []string{"payroll"}, Operations: []string{"describe"}},
	}})
	cl := r.client(t, scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("ok")}).FirstErr(); err != nil {
		t.Fatalf("produce to an allowed topic: %v", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "payroll", Value: []byte("no")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce to payroll: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	// An allowed topic is consumed (Fetch by topic id, v13+).
	consumer := r.client(t, scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism(),
		kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if fs := consumer.PollFetches(ctx); fs.NumRecords() == 0 {
		t.Fatalf("nothing consumed from orders: %v", fs.Errors())
	}

	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = 12
	fetch.MaxWaitMillis, fetch.MaxBytes = 10, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "payroll"
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	ft.Partitions = append(ft.Partitions, fp)
	fetch.Topics = append(fetch.Topics, ft)
	fr, err := fetch.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(fr.Topics) != 1 || fr.Topics[0].Partitions[0].ErrorCode != kerr.TopicAuthorizationFailed.Code {
		t.Errorf("fetch from payroll: %+v", fr.Topics)
	}

	// The listing hides what may not be described; naming it gets the error.
	r.srv.SetPolicy(&Policy{Topics: []TopicRule{{Principals: []string{"app*"}, Topics: []string{"ord*"}, Operations: []string{"*"}}}})
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	mr, err := md.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, tp := range mr.Topics {
		listed = append(listed, *tp.Topic)
	}
	if !slices.Contains(listed, "orders") || slices.Contains(listed, "payroll") {
		t.Errorf("all-topics Metadata lists %v, want orders and not payroll", listed)
	}
	md.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("payroll")}}
	if mr, err = md.RequestWith(ctx, cl); err != nil {
		t.Fatal(err)
	}
	if len(mr.Topics) != 1 || mr.Topics[0].ErrorCode != kerr.TopicAuthorizationFailed.Code || len(mr.Topics[0].Partitions) != 0 {
		t.Errorf("Metadata naming payroll: %+v", mr.Topics)
	}
	var m dto.Metric
	if err := r.srv.metrics.policyDenials.WithLabelValues(saslUser, "Produce").Write(&m); err != nil || m.GetCounter().GetValue() < 1 {
		t.Errorf("produce denials not counted: %v %v", m.GetCounter().GetValue(), err)
	}
}

// With group rules, a principal uses only the groups a rule allows: the
// others get GROUP_AUTHORIZATION_FAILED from FindCoordinator and the
// group APIs, and nothing reaches a coordinator.
func TestPolicyGovernsGroups(t *testing.T) {
	r := newSecureRig(t, 0)
	r.srv.SetPolicy(&Policy{Groups: []GroupRule{{Principals: []string{"app*"}, Groups: []string{"orders-*"}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mech := scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism()
	producer := r.client(t, mech)
	if err := producer.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	consumer := r.client(t, mech, kgo.ConsumerGroup("orders-billing"), kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if fs := consumer.PollFetches(ctx); fs.NumRecords() == 0 {
		t.Fatalf("allowed group consumed nothing: %v", fs.Errors())
	}
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit in an allowed group: %v", err)
	}

	// Straight to kproxy's one broker: kgo would retry and interpret the
	// group answers itself.
	broker := producer.Broker(0)
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.Version = 3
	fc.CoordinatorKey, fc.CoordinatorKeys = "payroll-readers", []string{"payroll-readers"} // kgo sends the newest version it can
	fr, err := fc.RequestWith(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	code := fr.ErrorCode
	if fr.Version >= 4 && len(fr.Coordinators) == 1 {
		code = fr.Coordinators[0].ErrorCode
	}
	if code != kerr.GroupAuthorizationFailed.Code {
		t.Errorf("FindCoordinator v%d for a refused group: code %d", fr.Version, code)
	}
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Version = 4
	hb.Group, hb.MemberID, hb.Generation = "payroll-readers", "m", 1
	hr, err := hb.RequestWith(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	if hr.ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Errorf("Heartbeat in a refused group: code %d", hr.ErrorCode)
	}
	of := kmsg.NewPtrOffsetFetchRequest()
	of.Version = 8
	of.Groups = []kmsg.OffsetFetchRequestGroup{{Group: "orders-billing"}, {Group: "payroll-readers"}}
	ofr, err := of.RequestWith(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	if len(ofr.Groups) != 2 || ofr.Groups[1].ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Errorf("OffsetFetch naming a refused group: %+v", ofr.Groups)
	}
}

// With transactional-id rules, a transactional producer may use only the
// ids a rule allows (TRANSACTIONAL_ID_AUTHORIZATION_FAILED otherwise);
// idempotent producers are not governed.
func TestPolicyGovernsTransactionalIDs(t *testing.T) {
	r := newSecureRig(t, 0)
	r.srv.SetPolicy(&Policy{Txns: []TxnRule{{Principals: []string{"app*"}, TransactionalIDs: []string{"orders-tx-*"}}}})
	mech := scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ok := r.client(t, mech, kgo.TransactionalID("orders-tx-1"))
	if err := ok.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := ok.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("tx")}).FirstErr(); err != nil {
		t.Fatalf("transactional produce with an allowed id: %v", err)
	}
	if err := ok.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit with an allowed id: %v", err)
	}

	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionalID = kmsg.StringPtr("payroll-tx-1")
	init.TransactionTimeoutMillis = 10000
	resp, err := init.RequestWith(ctx, ok.Broker(0))
	if err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.TransactionalIDAuthorizationFailed.Code || resp.ProducerID != -1 {
		t.Errorf("InitProducerID for a refused id: code %d pid %d", resp.ErrorCode, resp.ProducerID)
	}
	idem := kmsg.NewPtrInitProducerIDRequest()
	if resp, err := idem.RequestWith(ctx, ok.Broker(0)); err != nil || resp.ErrorCode != 0 {
		t.Errorf("idempotent InitProducerID: %v %v", err, resp)
	}
}
