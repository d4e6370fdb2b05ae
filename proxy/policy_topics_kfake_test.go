package proxy

import (
	"context"
	"reflect"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// topicCodes reads every error code a response gives each topic (its own,
// and its partitions'), for the answers of policy_topics.go's APIs.
func topicCodes(resp kmsg.Response) map[string][]int16 {
	out := map[string][]int16{}
	var walk func(v reflect.Value, topic string)
	walk = func(v reflect.Value, topic string) {
		for _, list := range []string{"Topics", "Resources", "Groups", "Partitions"} {
			l := v.FieldByName(list)
			for i := 0; l.IsValid() && l.Kind() == reflect.Slice && i < l.Len(); i++ {
				e := l.Index(i)
				if e.Kind() != reflect.Struct {
					continue
				}
				t := topic
				for _, k := range []string{"Topic", "ResourceName"} {
					if f := e.FieldByName(k); f.IsValid() {
						if f.Kind() == reflect.Pointer && !f.IsNil() {
							t = f.Elem().String()
						} else if f.Kind() == reflect.String {
							t = f.String()
						}
					}
				}
				if c := e.FieldByName("ErrorCode"); c.IsValid() && t != "" && list != "Groups" {
					out[t] = append(out[t], int16(c.Int()))
				}
				walk(e, t)
			}
		}
	}
	walk(reflect.ValueOf(resp).Elem(), "")
	return out
}

// Topic rules cover the topic APIs beyond Produce, Fetch and Metadata, item
// by item: a request naming an allowed and a refused topic is served for
// the allowed one and answers the refused one TOPIC_AUTHORIZATION_FAILED
// (never reaching the cluster: DeleteTopics leaves payroll in place);
// a request naming only refused topics is answered by kproxy. Each
// narrowed request is counted once.
func TestPolicyTopicRulesPerAPI(t *testing.T) {
	r := newSecureRig(t, 0)
	r.srv.SetPolicy(&Policy{
		Admin:  []AdminRule{{Principals: []string{"app*"}, Operations: []string{"*"}}},
		Topics: []TopicRule{{Principals: []string{"app*"}, Topics: []string{"orders", "new-*"}, Operations: []string{"*"}}},
	})
	cl := r.client(t, scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	both := []string{"orders", "payroll"}
	reqs := map[string]func(topics []string) kmsg.Request{
		"ListOffsets": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrListOffsetsRequest()
			for _, n := range ts {
				t := kmsg.NewListOffsetsRequestTopic()
				t.Topic = n
				p := kmsg.NewListOffsetsRequestTopicPartition()
				p.Timestamp = -1
				t.Partitions = append(t.Partitions, p)
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"OffsetForLeaderEpoch": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrOffsetForLeaderEpochRequest()
			for _, n := range ts {
				t := kmsg.NewOffsetForLeaderEpochRequestTopic()
				t.Topic = n
				p := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
				p.LeaderEpoch = 0
				t.Partitions = append(t.Partitions, p)
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"OffsetCommit": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrOffsetCommitRequest()
			q.Group, q.Generation = "g1", -1
			for _, n := range ts {
				t := kmsg.NewOffsetCommitRequestTopic()
				t.Topic = n
				p := kmsg.NewOffsetCommitRequestTopicPartition()
				p.Offset = 0
				t.Partitions = append(t.Partitions, p)
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"OffsetFetch": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrOffsetFetchRequest()
			g := kmsg.NewOffsetFetchRequestGroup()
			g.Group = "g1"
			q.Group = "g1"
			for _, n := range ts {
				t := kmsg.NewOffsetFetchRequestGroupTopic()
				t.Topic, t.Partitions = n, []int32{0}
				g.Topics = append(g.Topics, t)
				ot := kmsg.NewOffsetFetchRequestTopic()
				ot.Topic, ot.Partitions = n, []int32{0}
				q.Topics = append(q.Topics, ot)
			}
			q.Groups = append(q.Groups, g)
			return q
		},
		"DescribeConfigs": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrDescribeConfigsRequest()
			for _, n := range ts {
				res := kmsg.NewDescribeConfigsRequestResource()
				res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeTopic, n
				q.Resources = append(q.Resources, res)
			}
			return q
		},
		"CreatePartitions": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrCreatePartitionsRequest()
			q.TimeoutMillis = 5000
			for _, n := range ts {
				t := kmsg.NewCreatePartitionsRequestTopic()
				t.Topic, t.Count = n, 2
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"DeleteRecords": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrDeleteRecordsRequest()
			q.TimeoutMillis = 5000
			for _, n := range ts {
				t := kmsg.NewDeleteRecordsRequestTopic()
				t.Topic = n
				p := kmsg.NewDeleteRecordsRequestTopicPartition()
				p.Offset = 0
				t.Partitions = append(t.Partitions, p)
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"DescribeProducers": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrDescribeProducersRequest()
			for _, n := range ts {
				t := kmsg.NewDescribeProducersRequestTopic()
				t.Topic, t.Partitions = n, []int32{0}
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"OffsetDelete": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrOffsetDeleteRequest()
			q.Group = "g1"
			for _, n := range ts {
				t := kmsg.NewOffsetDeleteRequestTopic()
				t.Topic = n
				p := kmsg.NewOffsetDeleteRequestTopicPartition()
				t.Partitions = append(t.Partitions, p)
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"CreateTopics": func(ts []string) kmsg.Request {
			q := kmsg.NewPtrCreateTopicsRequest()
			q.TimeoutMillis = 5000
			for _, n := range ts {
				t := kmsg.NewCreateTopicsRequestTopic()
				t.Topic, t.NumPartitions, t.ReplicationFactor = "new-"+n, 1, 1
				if n == "payroll" {
					t.Topic = "payroll-2"
				}
				q.Topics = append(q.Topics, t)
			}
			return q
		},
		"DeleteTopics": func(ts []string) kmsg.Request { // last: it deletes orders
			q := kmsg.NewPtrDeleteTopicsRequest()
			q.TimeoutMillis = 5000
			for _, n := range ts {
				q.TopicNames = append(q.TopicNames, n)
				t := kmsg.NewDeleteTopicsRequestTopic()
				t.Topic = kmsg.StringPtr(n)
				q.Topics = append(q.Topics, t)
			}
			return q
		},
	}
	// Straight to kproxy's node: kgo's sharding would interpret (and
	// split) these requests itself.
	md0, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil || len(md0.Brokers) == 0 {
		t.Fatalf("metadata: %v", err)
	}
	node := cl.Broker(int(md0.Brokers[0].NodeID))
	// OffsetForLeaderEpoch is narrowed by the same code but kproxy
	// advertises it only at v2, which kfake does not serve.
	order := []string{"ListOffsets", "OffsetCommit", "OffsetFetch", "DescribeConfigs", "CreatePartitions",
		"DeleteRecords", "DescribeProducers", "OffsetDelete", "CreateTopics", "DeleteTopics"}
	authz := kerr.TopicAuthorizationFailed.Code
	for _, api := range order {
		build := reqs[api]
		allowed, refused := "orders", "payroll"
		if api == "CreateTopics" {
			allowed, refused = "new-orders", "payroll-2"
		}
		// Only the refused topic: kproxy answers alone.
		resp, err := node.Request(ctx, build([]string{"payroll"}))
		if err != nil {
			t.Fatalf("%s (payroll only): %v", api, err)
		}
		codes := topicCodes(resp)
		if len(codes[refused]) == 0 || codes[refused][0] != authz {
			t.Errorf("%s (payroll only): %s codes %v, want TOPIC_AUTHORIZATION_FAILED", api, refused, codes[refused])
		}
		// Both: the allowed one is served, the refused one refused.
		resp, err = node.Request(ctx, build(both))
		if err != nil {
			t.Fatalf("%s: %v", api, err)
		}
		codes = topicCodes(resp)
		if len(codes[refused]) == 0 {
			t.Errorf("%s: no answer for %s", api, refused)
		}
		for _, c := range codes[refused] {
			if c != authz {
				t.Errorf("%s: %s code %d, want TOPIC_AUTHORIZATION_FAILED", api, refused, c)
			}
		}
		if len(codes[allowed]) == 0 {
			t.Errorf("%s: no answer for %s", api, allowed)
		}
		for _, c := range codes[allowed] {
			if c == authz {
				t.Errorf("%s: the allowed %s was refused", api, allowed)
			}
		}
		var m dto.Metric
		if err := r.srv.metrics.policyDenials.WithLabelValues(saslUser, api).Write(&m); err != nil {
			t.Fatal(err)
		}
		if n := m.GetCounter().GetValue(); n != 2 {
			t.Errorf("%s: %v denials counted, want 2 (one per request)", api, n)
		}
	}
	// The refused DeleteTopics never reached kfake (asked without the
	// policy, which hides payroll from Metadata).
	r.srv.SetPolicy(nil)
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tp := range md.Topics {
		found = found || *tp.Topic == "payroll"
	}
	if !found {
		t.Error("payroll was deleted through a refused DeleteTopics")
	}
}

// Group rules per operation: a principal allowed only to describe a group
// may fetch its offsets but not join or commit (GROUP_AUTHORIZATION_FAILED),
// and deleting needs "delete".
func TestPolicyGroupOperations(t *testing.T) {
	p := &Policy{Groups: []GroupRule{
		{Principals: []string{"app1"}, Groups: []string{"viewers"}, Operations: []string{"describe"}},
		{Principals: []string{"app1"}, Groups: []string{"workers"}, Operations: []string{"read", "describe"}},
		{Principals: []string{"ops"}, Groups: []string{"*"}},
	}}
	for _, tc := range []struct {
		principal, group, op string
		want                 bool
	}{
		{"app1", "viewers", "describe", true},
		{"app1", "viewers", "read", false},
		{"app1", "workers", "read", true},
		{"app1", "workers", "delete", false},
		{"ops", "workers", "delete", true},
	} {
		if got := allowsKey(p.Groups, tc.principal, tc.group, tc.op); got != tc.want {
			t.Errorf("%s %s %s: %v, want %v", tc.principal, tc.group, tc.op, got, tc.want)
		}
	}

	r := newSecureRig(t, 0)
	r.srv.SetPolicy(&Policy{
		Admin:  []AdminRule{{Principals: []string{"app*"}, Operations: []string{"*"}}},
		Groups: []GroupRule{{Principals: []string{"app*"}, Groups: []string{"viewers"}, Operations: []string{"describe"}}},
	})
	cl := r.client(t, scram.Auth{User: saslUser, Pass: saslPassword}.AsSha512Mechanism())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	of := kmsg.NewPtrOffsetFetchRequest()
	of.Group = "viewers"
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = "viewers"
	of.Groups = append(of.Groups, g)
	ofr, err := of.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if ofr.ErrorCode == kerr.GroupAuthorizationFailed.Code || len(ofr.Groups) > 0 && ofr.Groups[0].ErrorCode == kerr.GroupAuthorizationFailed.Code {
		t.Errorf("OffsetFetch (describe) refused: %+v", ofr)
	}
	jg := kmsg.NewPtrJoinGroupRequest()
	jg.Group, jg.ProtocolType, jg.SessionTimeoutMillis, jg.RebalanceTimeoutMillis = "viewers", "consumer", 10000, 10000
	jg.Protocols = append(jg.Protocols, kmsg.JoinGroupRequestProtocol{Name: "range"})
	jr, err := jg.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if jr.ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Errorf("JoinGroup (read) with describe only: code %d, want GROUP_AUTHORIZATION_FAILED", jr.ErrorCode)
	}
	dg := kmsg.NewPtrDeleteGroupsRequest()
	dg.Groups = []string{"viewers"}
	dr, err := dg.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(dr.Groups) != 1 || dr.Groups[0].ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Errorf("DeleteGroups (delete) with describe only: %+v, want GROUP_AUTHORIZATION_FAILED", dr.Groups)
	}
}
