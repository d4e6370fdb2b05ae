package proxy

// Topic rules for the topic-addressed APIs beyond Produce, Fetch and
// Metadata (policy.go has those three). Each API needs a topic operation,
// as a broker's authorizer asks for one (Kafka's operation in brackets):
//
//	describe: ListOffsets, OffsetForLeaderEpoch, OffsetFetch,
//	          DescribeProducers [DESCRIBE]; DescribeConfigs of a topic
//	          [DESCRIBE_CONFIGS]
//	fetch:    OffsetCommit, TxnOffsetCommit, OffsetDelete [READ]
//	produce:  AddPartitionsToTxn [WRITE]
//	create:   CreateTopics [CREATE]
//	alter:    CreatePartitions [ALTER]; AlterConfigs and
//	          IncrementalAlterConfigs of a topic [ALTER_CONFIGS]
//	delete:   DeleteTopics, DeleteRecords [DELETE]
//
// Unlike Produce and Fetch (refused whole), these are answered item by
// item as a broker does: the refused topics are taken out of the request,
// the rest is served, and the answer gets TOPIC_AUTHORIZATION_FAILED for
// each refused topic (per partition where the answer is per partition).
// A request whose every topic is refused is answered by kproxy alone. An
// OffsetFetch for all of a group's topics has refused topics left out of
// its answer, as a broker leaves out topics the client may not describe.
// The destructive admin operations still need their admin rule first
// (policy.go adminOps); these rules then narrow them to topics.

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// topicOps is the topic operation each narrowed API needs.
var topicOps = map[int16]string{
	kmsg.ListOffsets.Int16():             "describe",
	kmsg.OffsetForLeaderEpoch.Int16():    "describe",
	kmsg.OffsetFetch.Int16():             "describe",
	kmsg.DescribeProducers.Int16():       "describe",
	kmsg.DescribeConfigs.Int16():         "describe",
	kmsg.OffsetCommit.Int16():            "fetch",
	kmsg.TxnOffsetCommit.Int16():         "fetch",
	kmsg.OffsetDelete.Int16():            "fetch",
	kmsg.AddPartitionsToTxn.Int16():      "produce",
	kmsg.CreateTopics.Int16():            "create",
	kmsg.CreatePartitions.Int16():        "alter",
	kmsg.AlterConfigs.Int16():            "alter",
	kmsg.IncrementalAlterConfigs.Int16(): "alter",
	kmsg.DeleteTopics.Int16():            "delete",
	kmsg.DeleteRecords.Int16():           "delete",
}

// topicList names one list of topic entries: the request's field, the
// answer's, and the field naming the topic. Config APIs list resources,
// of which only topics are governed.
type topicList struct {
	req, resp, key string
	resources      bool
}

var (
	topicsList    = topicList{req: "Topics", resp: "Topics", key: "Topic"}
	resourcesList = topicList{req: "Resources", resp: "Resources", key: "ResourceName", resources: true}
)

// topicNarrowing is what was taken out of a request: restore puts the
// refusals into its answer.
type topicNarrowing struct {
	restore func(resp kmsg.Response)
}

// topicNarrow takes the topics the principal may not use out of req (in
// place, before its handler runs). It returns nil when nothing was
// refused; a narrowing whose full answer is ready (every topic refused)
// as full. Denials are counted once per request.
func (cc *clientConn) topicNarrow(req kmsg.Request) (n *topicNarrowing, full kmsg.Response) {
	p := cc.srv.policy.Load()
	if p == nil || len(p.Topics) == 0 {
		return nil, nil
	}
	op, ok := topicOps[req.Key()]
	if !ok {
		return nil, nil
	}
	principal := cc.Principal()
	refused := func(topic string) bool { return !p.allowsTopic(principal, topic, op) }
	byID := func(id [16]byte) string {
		n, _ := cc.srv.topicIDs.name(VirtualTopicID(id))
		return n
	}
	var restores []func(kmsg.Response)
	left := 0
	narrowList := func(reqList reflect.Value, l topicList, into func(kmsg.Response) reflect.Value) {
		kept, removed := splitEntries(reqList, l, refused, byID)
		left += kept
		if len(removed) > 0 {
			restores = append(restores, func(resp kmsg.Response) { appendRefusals(into(resp), removed, l) })
		}
	}
	respField := func(name string) func(kmsg.Response) reflect.Value {
		return func(resp kmsg.Response) reflect.Value { return reflect.ValueOf(resp).Elem().FieldByName(name) }
	}
	switch r := req.(type) {
	case *kmsg.OffsetFetchRequest:
		if r.Version < 8 {
			if r.Topics == nil { // all of the group's topics
				return cc.hideTopics(principal, req, refused, respField("Topics")), nil
			}
			narrowList(reflect.ValueOf(&r.Topics).Elem(), topicsList, respField("Topics"))
			break
		}
		for i := range r.Groups {
			g := &r.Groups[i]
			group := g.Group
			inGroup := func(resp kmsg.Response) reflect.Value {
				or, ok := resp.(*kmsg.OffsetFetchResponse)
				for j := 0; ok && j < len(or.Groups); j++ {
					if or.Groups[j].Group == group {
						return reflect.ValueOf(&or.Groups[j].Topics).Elem()
					}
				}
				return reflect.Value{}
			}
			if g.Topics == nil { // all of the group's topics
				left++
				restores = append(restores, func(resp kmsg.Response) { dropDenied(inGroup(resp), topicsList, refused, byID) })
				continue
			}
			narrowList(reflect.ValueOf(&g.Topics).Elem(), topicsList, inGroup)
		}
	case *kmsg.AddPartitionsToTxnRequest:
		if r.Version >= 4 {
			return nil, nil // v4+ batches transactions: broker-to-broker only
		}
		narrowList(reflect.ValueOf(&r.Topics).Elem(), topicsList, respField("Topics"))
	case *kmsg.DeleteTopicsRequest:
		if r.Version < 6 {
			var kept, out []string
			for _, t := range r.TopicNames {
				if refused(t) {
					out = append(out, t)
				} else {
					kept = append(kept, t)
				}
			}
			left += len(kept)
			if len(out) > 0 {
				r.TopicNames = kept
				restores = append(restores, func(resp kmsg.Response) {
					dr, ok := resp.(*kmsg.DeleteTopicsResponse)
					for i := 0; ok && i < len(out); i++ {
						t := out[i]
						rt := kmsg.NewDeleteTopicsResponseTopic()
						rt.Topic, rt.ErrorCode, rt.ErrorMessage = kmsg.StringPtr(t), kerr.TopicAuthorizationFailed.Code, denied
						dr.Topics = append(dr.Topics, rt)
					}
				})
			}
			break
		}
		narrowList(reflect.ValueOf(&r.Topics).Elem(), topicsList, respField("Topics"))
	case *kmsg.DescribeConfigsRequest, *kmsg.AlterConfigsRequest, *kmsg.IncrementalAlterConfigsRequest:
		narrowList(reflect.ValueOf(req).Elem().FieldByName("Resources"), resourcesList, respField("Resources"))
	default:
		narrowList(reflect.ValueOf(req).Elem().FieldByName("Topics"), topicsList, respField("Topics"))
	}
	if len(restores) == 0 {
		return nil, nil
	}
	cc.countDenial(principal, req)
	n = &topicNarrowing{restore: func(resp kmsg.Response) {
		if resp == nil {
			return
		}
		for _, f := range restores {
			f(resp)
		}
	}}
	if left == 0 {
		// Nothing left to ask a broker: the refusals are the answer.
		resp := req.ResponseKind()
		if or, ok := resp.(*kmsg.OffsetFetchResponse); ok {
			for _, g := range req.(*kmsg.OffsetFetchRequest).Groups {
				rg := kmsg.NewOffsetFetchResponseGroup()
				rg.Group = g.Group
				or.Groups = append(or.Groups, rg)
			}
		}
		n.restore(resp)
		return nil, resp
	}
	return n, nil
}

// hideTopics is the narrowing of a request for all topics (OffsetFetch
// v0-7 with null topics): the refused topics are left out of its answer.
func (cc *clientConn) hideTopics(principal string, req kmsg.Request, denied func(string) bool, list func(kmsg.Response) reflect.Value) *topicNarrowing {
	return &topicNarrowing{restore: func(resp kmsg.Response) {
		if resp != nil && dropDenied(list(resp), topicsList, denied, nil) {
			cc.countDenial(principal, req)
		}
	}}
}

// entryTopic is the topic an entry names: its name, else (by topic id,
// newer versions) the name of its virtual id.
func entryTopic(e reflect.Value, l topicList, byID func([16]byte) string) (string, bool) {
	if l.resources {
		if kmsg.ConfigResourceType(e.FieldByName("ResourceType").Int()) != kmsg.ConfigResourceTypeTopic {
			return "", false
		}
		return e.FieldByName("ResourceName").String(), true
	}
	k := e.FieldByName(l.key)
	name := ""
	switch k.Kind() {
	case reflect.String:
		name = k.String()
	case reflect.Pointer:
		if !k.IsNil() {
			name = k.Elem().String()
		}
	}
	if id := e.FieldByName("TopicID"); name == "" && id.IsValid() && byID != nil {
		name = byID(id.Interface().([16]byte))
	}
	return name, true
}

// splitEntries removes the refused entries from the request list (a
// slice value, settable) and returns how many were kept and the removed
// ones.
func splitEntries(list reflect.Value, l topicList, denied func(string) bool, byID func([16]byte) string) (kept int, removed []reflect.Value) {
	if !list.IsValid() || list.Kind() != reflect.Slice {
		return 0, nil
	}
	keep := reflect.MakeSlice(list.Type(), 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		e := list.Index(i)
		if t, governed := entryTopic(e, l, byID); governed && denied(t) {
			removed = append(removed, e)
			continue
		}
		keep = reflect.Append(keep, e)
	}
	if len(removed) > 0 {
		list.Set(keep)
	}
	return keep.Len(), removed
}

// dropDenied removes refused topics from an answer's list; it reports
// whether any was removed.
func dropDenied(list reflect.Value, l topicList, denied func(string) bool, byID func([16]byte) string) bool {
	if !list.IsValid() || !list.CanSet() {
		return false
	}
	_, removed := splitEntries(list, l, denied, byID)
	return len(removed) > 0
}

// appendRefusals adds to the answer's list one entry per refused request
// entry: its topic (name, id, resource type), and TOPIC_AUTHORIZATION_FAILED
// on the entry, or on each requested partition when the answer is per
// partition. New entries start from kmsg's defaults (offsets, epochs and
// counts -1).
func appendRefusals(list reflect.Value, removed []reflect.Value, l topicList) {
	if !list.IsValid() || !list.CanSet() {
		return
	}
	code := reflect.ValueOf(kerr.TopicAuthorizationFailed.Code)
	elem := list.Type().Elem()
	for _, r := range removed {
		e := newKmsgDefault(elem)
		for _, f := range []string{l.key, "TopicID", "ResourceType"} {
			if dst, src := e.FieldByName(f), r.FieldByName(f); dst.IsValid() && src.IsValid() && dst.Type() == src.Type() {
				dst.Set(src)
			}
		}
		parts := e.FieldByName("Partitions")
		if !parts.IsValid() {
			e.FieldByName("ErrorCode").Set(code)
			if m := e.FieldByName("ErrorMessage"); m.IsValid() {
				m.Set(reflect.ValueOf(denied))
			}
			list.Set(reflect.Append(list, e))
			continue
		}
		reqParts := r.FieldByName("Partitions")
		for i := 0; reqParts.IsValid() && i < reqParts.Len(); i++ {
			rp := reqParts.Index(i)
			p := newKmsgDefault(parts.Type().Elem())
			if rp.Kind() == reflect.Int32 {
				p.FieldByName("Partition").Set(rp)
			} else {
				p.FieldByName("Partition").Set(rp.FieldByName("Partition"))
			}
			p.FieldByName("ErrorCode").Set(code)
			parts.Set(reflect.Append(parts, p))
		}
		list.Set(reflect.Append(list, e))
	}
}

// newKmsgDefault is a new value of a kmsg struct type with its Default()
// applied.
func newKmsgDefault(t reflect.Type) reflect.Value {
	p := reflect.New(t)
	if d, ok := p.Interface().(interface{ Default() }); ok {
		d.Default()
	}
	return p.Elem()
}
