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
