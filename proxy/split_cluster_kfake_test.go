package proxy

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// splitRig is a proxy over a source and a target: "onsource" lives on the
// source, "ontarget" on the target (and is routed there), "tonly" exists
// only on the target but is routed by default (to the source), so a group
// homed on the source keeps its commits of tonly on the target. Group "gt"
// is homed on the target, every other group on the source.
func splitRig(t *testing.T) (*Server, *kfake.Cluster, *kfake.Cluster) {
	t.Helper()
	src := newKfake(t, kfake.NumBrokers(1), kfake.ClusterID("src"), kfake.SeedTopics(3, "onsource"))
	tgt := newKfake(t, kfake.NumBrokers(1), kfake.ClusterID("tgt"), kfake.SeedTopics(3, "ontarget", "tonly"))
	routes := routesHeader + "routes:\n  default: source\n  topics:\n    ontarget: target\n    newtgt: target\n"
	srv := startProxy(t, Options{NodeID: 9, StateDir: t.TempDir(), Router: homeRouter{tableFor(t, routes), map[string]string{"gt": Target}},
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()}})
	return srv, src, tgt
}

// failAll makes every request of key to c fail: the broker closes the
// connection instead of answering.
func failAll(c *kfake.Cluster, key kmsg.Key) {
	c.ControlKey(key.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, errors.New("injected failure"), true
	})
}

// askDirect sends req to the proxy itself, with no client-side sharding or
// retries, so the test sees the proxy's own answer.
func askDirect[R kmsg.Response](t *testing.T, srv *Server, req kmsg.Request) R {
	t.Helper()
	cl, ctx := proxyClient(t, srv, 20*time.Second)
	resp, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp.(R)
}

// askWithTargetFailing sends req to a splitRig proxy whose target fails
// every request of req's kind.
func askWithTargetFailing[R kmsg.Response](t *testing.T, req kmsg.Request) R {
	t.Helper()
	srv, _, tgt := splitRig(t)
	failAll(tgt, kmsg.Key(req.Key()))
	return askDirect[R](t, srv, req)
}

// wantCodes checks that got names exactly the items of want, each with its
// code.
func wantCodes(t *testing.T, got map[string]int16, want map[string]int16) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("answered %v, want %v", got, want)
	}
	for k, code := range want {
		if c, ok := got[k]; !ok || c != code {
			t.Errorf("%s: answered %v (present %v), want %v", k, kerr.ErrorForCode(c), ok, kerr.ErrorForCode(code))
		}
	}
}

var timedOut = kerr.RequestTimedOut.Code

// A topic whose cluster failed is answered REQUEST_TIMED_OUT, not dropped.
func TestCreateTopicsAnswersTopicsOfAFailedCluster(t *testing.T) {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 5000
	for _, n := range []string{"newsrc", "newtgt"} {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = n, 1, 1
		req.Topics = append(req.Topics, rt)
	}
	resp := askWithTargetFailing[*kmsg.CreateTopicsResponse](t, req)
	wantCodes(t, codesOf(resp.Topics, func(t kmsg.CreateTopicsResponseTopic) (string, int16) { return t.Topic, t.ErrorCode }),
		map[string]int16{"newsrc": 0, "newtgt": timedOut})
}

func TestCreatePartitionsAnswersTopicsOfAFailedCluster(t *testing.T) {
	req := kmsg.NewPtrCreatePartitionsRequest()
	req.TimeoutMillis = 5000
	for _, n := range []string{"onsource", "ontarget"} {
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic, rt.Count = n, 4
		req.Topics = append(req.Topics, rt)
	}
	resp := askWithTargetFailing[*kmsg.CreatePartitionsResponse](t, req)
	wantCodes(t, codesOf(resp.Topics, func(t kmsg.CreatePartitionsResponseTopic) (string, int16) { return t.Topic, t.ErrorCode }), sourceOKTargetTimedOut)
}

func TestDeleteTopicsAnswersTopicsOfAFailedCluster(t *testing.T) {
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = 5000
	for _, n := range []string{"onsource", "ontarget"} {
		rt := kmsg.NewDeleteTopicsRequestTopic()
		rt.Topic = kmsg.StringPtr(n)
		req.Topics = append(req.Topics, rt)
		req.TopicNames = append(req.TopicNames, n)
	}
	resp := askWithTargetFailing[*kmsg.DeleteTopicsResponse](t, req)
	wantCodes(t, codesOf(resp.Topics, func(t kmsg.DeleteTopicsResponseTopic) (string, int16) {
		if t.Topic == nil {
			return "<nil>", t.ErrorCode
		}
		return *t.Topic, t.ErrorCode
	}), sourceOKTargetTimedOut)
}

// codesOf maps each answer's name to its error code.
func codesOf[A any](answers []A, fields func(A) (string, int16)) map[string]int16 {
	got := map[string]int16{}
	for _, a := range answers {
		n, code := fields(a)
		got[n] = code
	}
	return got
}

// sourceOKTargetTimedOut is what a request naming onsource and ontarget
// gets when the target failed.
var sourceOKTargetTimedOut = map[string]int16{"onsource": 0, "ontarget": timedOut}

func TestAlterConfigsAnswersResourcesOfAFailedCluster(t *testing.T) {
	req := kmsg.NewPtrAlterConfigsRequest()
	for _, n := range []string{"onsource", "ontarget"} {
		r := kmsg.NewAlterConfigsRequestResource()
		r.ResourceType, r.ResourceName = kmsg.ConfigResourceTypeTopic, n
		c := kmsg.NewAlterConfigsRequestResourceConfig()
		c.Name, c.Value = "retention.ms", kmsg.StringPtr("3600000")
		r.Configs = append(r.Configs, c)
		req.Resources = append(req.Resources, r)
	}
	resp := askWithTargetFailing[*kmsg.AlterConfigsResponse](t, req)
	wantCodes(t, codesOf(resp.Resources, func(r kmsg.AlterConfigsResponseResource) (string, int16) { return r.ResourceName, r.ErrorCode }), sourceOKTargetTimedOut)
}

func TestIncrementalAlterConfigsAnswersResourcesOfAFailedCluster(t *testing.T) {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	for _, n := range []string{"onsource", "ontarget"} {
		r := kmsg.NewIncrementalAlterConfigsRequestResource()
		r.ResourceType, r.ResourceName = kmsg.ConfigResourceTypeTopic, n
		c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		c.Name, c.Value = "retention.ms", kmsg.StringPtr("3600000")
		r.Configs = append(r.Configs, c)
		req.Resources = append(req.Resources, r)
	}
	resp := askWithTargetFailing[*kmsg.IncrementalAlterConfigsResponse](t, req)
	wantCodes(t, codesOf(resp.Resources, func(r kmsg.IncrementalAlterConfigsResponseResource) (string, int16) {
		return r.ResourceName, r.ErrorCode
	}), sourceOKTargetTimedOut)
}

func TestDescribeConfigsAnswersResourcesOfAFailedCluster(t *testing.T) {
	req := kmsg.NewPtrDescribeConfigsRequest()
	for _, n := range []string{"onsource", "ontarget"} {
		r := kmsg.NewDescribeConfigsRequestResource()
		r.ResourceType, r.ResourceName = kmsg.ConfigResourceTypeTopic, n
		req.Resources = append(req.Resources, r)
	}
	resp := askWithTargetFailing[*kmsg.DescribeConfigsResponse](t, req)
	wantCodes(t, codesOf(resp.Resources, func(r kmsg.DescribeConfigsResponseResource) (string, int16) { return r.ResourceName, r.ErrorCode }), sourceOKTargetTimedOut)
}

// offsetCommit commits offset on partitions 0-2 of each topic, as a simple
// commit (generation -1) of group.
func offsetCommit(group string, offset int64, topics ...string) *kmsg.OffsetCommitRequest {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation = group, -1
	for _, n := range topics {
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = n
		for p := int32(0); p < 3; p++ {
			rp := kmsg.NewOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset = p, offset
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// A commit split across homes answers every partition: those of the part
// whose coordinator failed carry a retriable error.
func TestOffsetCommitAnswersPartitionsOfAFailedCluster(t *testing.T) {
	resp := askWithTargetFailing[*kmsg.OffsetCommitResponse](t, offsetCommit("g", 5, "onsource", "tonly"))
	n := 0
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			n++
			switch rt.Topic {
			case "onsource":
				if rp.ErrorCode != 0 {
					t.Errorf("onsource/%d: %v", rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
				}
			case "tonly":
				if !kerr.IsRetriable(kerr.ErrorForCode(rp.ErrorCode)) {
					t.Errorf("tonly/%d: %v, want a retriable error", rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
				}
			}
		}
	}
	if n != 6 {
		t.Fatalf("%d partitions answered, want 6: %+v", n, resp.Topics)
	}
}

// offsetFetch asks group's committed offsets of partitions 0-2 of topics
// (v8+ layout).
func offsetFetch(group string, topics ...string) *kmsg.OffsetFetchRequest {
	req := kmsg.NewPtrOffsetFetchRequest()
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = group
	for _, n := range topics {
		g.Topics = append(g.Topics, kmsg.OffsetFetchRequestGroupTopic{Topic: n, Partitions: []int32{0, 1, 2}})
	}
	req.Groups = append(req.Groups, g)
	return req
}

// fetchedOffsets flattens a one-group OffsetFetch answer to topic/partition
// -> offset and error.
func fetchedOffsets(t *testing.T, resp *kmsg.OffsetFetchResponse) (group int16, offsets map[string]int64, codes map[string]int16) {
	t.Helper()
	if len(resp.Groups) != 1 {
		t.Fatalf("%d groups answered", len(resp.Groups))
	}
	offsets, codes = map[string]int64{}, map[string]int16{}
	for _, rt := range resp.Groups[0].Topics {
		for _, rp := range rt.Partitions {
			k := rt.Topic + "/" + string(rune('0'+rp.Partition))
			offsets[k], codes[k] = rp.Offset, rp.ErrorCode
		}
	}
	return resp.Groups[0].ErrorCode, offsets, codes
}

// commitOnHome commits offset 7 of onsource for group g, on its home.
func commitOnHome(t *testing.T, srv *Server) {
	t.Helper()
	commit := askDirect[*kmsg.OffsetCommitResponse](t, srv, offsetCommit("g", 7, "onsource"))
	for _, rt := range commit.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				t.Fatalf("commit %s/%d: %v", rt.Topic, rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
			}
		}
	}
}

// A group with commits only on its home: the other cluster does not know
// the group (kfake answers GROUP_ID_NOT_FOUND), so its partitions have no
// committed offset (-1), as a broker answers for a group without commits.
// They used to be left out, and franz-go looped on "broker repeatedly
// omitted a requested partition".
func TestOffsetFetchAnswersNoOffsetWhereTheGroupIsUnknown(t *testing.T) {
	srv, _, _ := splitRig(t)
	commitOnHome(t, srv)
	resp := askDirect[*kmsg.OffsetFetchResponse](t, srv, offsetFetch("g", "onsource", "tonly"))
	group, offsets, codes := fetchedOffsets(t, resp)
	if group != 0 || len(offsets) != 6 {
		t.Fatalf("group error %v, %d partitions answered, want none and 6: %v", kerr.ErrorForCode(group), len(offsets), offsets)
	}
	for k, o := range offsets {
		want := int64(7)
		if k[:5] == "tonly" {
			want = -1
		}
		if o != want || codes[k] != 0 {
			t.Errorf("%s: offset %d %v, want %d and no error", k, o, kerr.ErrorForCode(codes[k]), want)
		}
	}
}

// An off-home coordinator that fails answers its partitions with a
// retriable error, which is also the group's, so the client asks again.
func TestOffsetFetchAnswersPartitionsOfAFailedCluster(t *testing.T) {
	srv, _, tgt := splitRig(t)
	commitOnHome(t, srv)
	failAll(tgt, kmsg.OffsetFetch)
	resp := askDirect[*kmsg.OffsetFetchResponse](t, srv, offsetFetch("g", "onsource", "tonly"))
	group, offsets, codes := fetchedOffsets(t, resp)
	if !kerr.IsRetriable(kerr.ErrorForCode(group)) || len(offsets) != 6 {
		t.Fatalf("group error %v, %d partitions answered, want a retriable error and 6", kerr.ErrorForCode(group), len(offsets))
	}
	for k, code := range codes {
		if (k[:5] == "tonly") != (code != 0) {
			t.Errorf("%s: %v", k, kerr.ErrorForCode(code))
		}
	}
}

// A batched group request answers every group: one whose coordinator
// failed gets COORDINATOR_NOT_AVAILABLE, which clients retry.
func TestDescribeGroupsAnswersGroupsOfAFailedCluster(t *testing.T) {
	srv, _, tgt := splitRig(t)
	commitOnHome(t, srv)
	failAll(tgt, kmsg.DescribeGroups)
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{"gt", "g"}
	resp := askDirect[*kmsg.DescribeGroupsResponse](t, srv, req)
	if len(resp.Groups) != 2 || resp.Groups[0].Group != "gt" || resp.Groups[1].Group != "g" {
		t.Fatalf("answered %+v, want gt then g", resp.Groups)
	}
	if code := resp.Groups[0].ErrorCode; code != kerr.CoordinatorNotAvailable.Code {
		t.Errorf("gt: %v, want COORDINATOR_NOT_AVAILABLE", kerr.ErrorForCode(code))
	}
	if code := resp.Groups[1].ErrorCode; code != 0 {
		t.Errorf("g: %v", kerr.ErrorForCode(code))
	}
}
