package proxy

// Policy at kproxy: what each principal may do through it. Without a
// policy (nil) every API is forwarded, as before policies existed. With
// one, the APIs in adminOps are refused unless a rule allows the operation
// for the connection's principal, and with topic rules, Produce and Fetch
// need the topic's produce or fetch and Metadata shows only what may be
// described. A refusal is the answer a broker's authorizer gives (every
// item of the request gets TOPIC_, GROUP_ or CLUSTER_AUTHORIZATION_FAILED)
// and nothing is sent upstream. With group rules, the group APIs need the
// group; with transactional-id rules, the transaction APIs need the id.

import (
	"path"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// AdminRule allows principals (names or path.Match globs) some admin
// operations (adminOps names, or "*").
type AdminRule struct {
	Principals []string
	Operations []string
}

// TopicRule allows principals some operations ("produce", "fetch",
// "describe", or "*") on topics (names or path.Match globs).
type TopicRule struct {
	Principals []string
	Topics     []string
	Operations []string
}

// Policy is a validated policy (config.Policy). With no Topics rule,
// topic access is not governed; with at least one, a principal may use a
// topic only as a rule allows.
type Policy struct {
	Admin  []AdminRule
	Topics []TopicRule
	Groups []GroupRule
	Txns   []TxnRule
}

// allowsTopic reports whether principal may perform op on topic.
func (p *Policy) allowsTopic(principal, topic, op string) bool {
	if len(p.Topics) == 0 {
		return true
	}
	for _, r := range p.Topics {
		if !slices.Contains(r.Operations, op) && !slices.Contains(r.Operations, "*") {
			continue
		}
		if !matchAny(r.Principals, principal) || !matchAny(r.Topics, topic) {
			continue
		}
		return true
	}
	return false
}

func matchAny(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// adminOps names the operation each governed API needs.
var adminOps = map[int16]string{
	kmsg.DeleteTopics.Int16():              "delete_topics",
	kmsg.DeleteRecords.Int16():             "delete_records",
	kmsg.CreatePartitions.Int16():          "create_partitions",
	kmsg.AlterConfigs.Int16():              "alter_configs",
	kmsg.IncrementalAlterConfigs.Int16():   "incremental_alter_configs",
	kmsg.CreateACLs.Int16():                "create_acls",
	kmsg.DeleteACLs.Int16():                "delete_acls",
	kmsg.ElectLeaders.Int16():              "elect_leaders",
	kmsg.AlterClientQuotas.Int16():         "alter_client_quotas",
	kmsg.AlterUserSCRAMCredentials.Int16(): "alter_user_scram_credentials",
	kmsg.DeleteGroups.Int16():              "delete_groups",
	kmsg.OffsetDelete.Int16():              "offset_delete",
}

// allowsAdmin reports whether principal may perform op.
func (p *Policy) allowsAdmin(principal, op string) bool {
	for _, r := range p.Admin {
		if !slices.Contains(r.Operations, op) && !slices.Contains(r.Operations, "*") {
			continue
		}
		for _, g := range r.Principals {
			if ok, _ := path.Match(g, principal); ok {
				return true
			}
		}
	}
	return false
}

// SetPolicy installs p for new requests; nil removes the policy.
func (s *Server) SetPolicy(p *Policy) { s.policy.Store(p) }

// policyDenial returns the refusal of req when the policy does not allow
// it for the connection's principal, else nil.
func (cc *clientConn) policyDenial(req kmsg.Request) kmsg.Response {
	p := cc.srv.policy.Load()
	if p == nil {
		return nil
	}
	if resp := cc.topicDenial(p, req); resp != nil {
		return resp
	}
	if resp := cc.groupDenial(p, req); resp != nil {
		return resp
	}
	if resp := cc.txnDenial(p, req); resp != nil {
		return resp
	}
	op, governed := adminOps[req.Key()]
	if !governed {
		return nil
	}
	principal := cc.Principal()
	if p.allowsAdmin(principal, op) {
		return nil
	}
	resp := denyAll(req)
	if resp == nil {
		return nil
	}
	cc.srv.metrics.policyDenials.WithLabelValues(principal, kmsg.NameForKey(req.Key())).Inc()
	cc.log.Warn("request denied by policy", "principal", principal, "api", kmsg.NameForKey(req.Key()), "operation", op)
	return resp
}

var denied = kmsg.StringPtr("denied by kproxy policy")

// denyAll answers every item of req with the authorizer's error.
func denyAll(req kmsg.Request) kmsg.Response {
	topicErr, groupErr, clusterErr := kerr.TopicAuthorizationFailed.Code, kerr.GroupAuthorizationFailed.Code, kerr.ClusterAuthorizationFailed.Code
	switch r := req.(type) {
	case *kmsg.DeleteTopicsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteTopicsResponse)
		var names []string
		if r.Version < 6 {
			names = r.TopicNames
		}
		for _, t := range r.Topics {
			if t.Topic != nil {
				names = append(names, *t.Topic)
				continue
			}
			rt := kmsg.NewDeleteTopicsResponseTopic()
			rt.TopicID, rt.ErrorCode, rt.ErrorMessage = t.TopicID, topicErr, denied
			resp.Topics = append(resp.Topics, rt)
		}
		for _, n := range names {
			rt := kmsg.NewDeleteTopicsResponseTopic()
			rt.Topic, rt.ErrorCode, rt.ErrorMessage = kmsg.StringPtr(n), topicErr, denied
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.DeleteRecordsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteRecordsResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewDeleteRecordsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewDeleteRecordsResponseTopicPartition()
				rp.Partition, rp.LowWatermark, rp.ErrorCode = p.Partition, -1, topicErr
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.CreatePartitionsRequest:
		resp := r.ResponseKind().(*kmsg.CreatePartitionsResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewCreatePartitionsResponseTopic()
			rt.Topic, rt.ErrorCode, rt.ErrorMessage = t.Topic, topicErr, denied
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.AlterConfigsRequest:
		resp := r.ResponseKind().(*kmsg.AlterConfigsResponse)
		for _, res := range r.Resources {
			rr := kmsg.NewAlterConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode, rr.ErrorMessage = res.ResourceType, res.ResourceName, configDenial(res.ResourceType), denied
			resp.Resources = append(resp.Resources, rr)
		}
		return resp
	case *kmsg.IncrementalAlterConfigsRequest:
		resp := r.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		for _, res := range r.Resources {
			rr := kmsg.NewIncrementalAlterConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode, rr.ErrorMessage = res.ResourceType, res.ResourceName, configDenial(res.ResourceType), denied
			resp.Resources = append(resp.Resources, rr)
		}
		return resp
	case *kmsg.CreateACLsRequest:
		resp := r.ResponseKind().(*kmsg.CreateACLsResponse)
		for range r.Creations {
			rr := kmsg.NewCreateACLsResponseResult()
			rr.ErrorCode, rr.ErrorMessage = clusterErr, denied
			resp.Results = append(resp.Results, rr)
		}
		return resp
	case *kmsg.DeleteACLsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteACLsResponse)
		for range r.Filters {
			rr := kmsg.NewDeleteACLsResponseResult()
			rr.ErrorCode, rr.ErrorMessage = clusterErr, denied
			resp.Results = append(resp.Results, rr)
		}
		return resp
	case *kmsg.ElectLeadersRequest:
		resp := r.ResponseKind().(*kmsg.ElectLeadersResponse)
		resp.ErrorCode = clusterErr // v1+; v0 has only the per-partition codes
		for _, t := range r.Topics {
			rt := kmsg.NewElectLeadersResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewElectLeadersResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p, clusterErr, denied
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.AlterClientQuotasRequest:
		resp := r.ResponseKind().(*kmsg.AlterClientQuotasResponse)
		for _, e := range r.Entries {
			re := kmsg.NewAlterClientQuotasResponseEntry()
			re.ErrorCode, re.ErrorMessage = clusterErr, denied
			for _, c := range e.Entity {
				rc := kmsg.NewAlterClientQuotasResponseEntryEntity()
				rc.Type, rc.Name = c.Type, c.Name
				re.Entity = append(re.Entity, rc)
			}
			resp.Entries = append(resp.Entries, re)
		}
		return resp
	case *kmsg.AlterUserSCRAMCredentialsRequest:
		resp := r.ResponseKind().(*kmsg.AlterUserSCRAMCredentialsResponse)
		users := map[string]bool{}
		for _, d := range r.Deletions {
			users[d.Name] = true
		}
		for _, u := range r.Upsertions {
			users[u.Name] = true
		}
		for _, u := range sortedStrings(users) {
			rr := kmsg.NewAlterUserSCRAMCredentialsResponseResult()
			rr.User, rr.ErrorCode, rr.ErrorMessage = u, clusterErr, denied
			resp.Results = append(resp.Results, rr)
		}
		return resp
	case *kmsg.DeleteGroupsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteGroupsResponse)
		for _, g := range r.Groups {
			rg := kmsg.NewDeleteGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, groupErr
			resp.Groups = append(resp.Groups, rg)
		}
		return resp
	case *kmsg.OffsetDeleteRequest:
		resp := r.ResponseKind().(*kmsg.OffsetDeleteResponse)
		resp.ErrorCode = groupErr
		return resp
	}
	return nil
}

// configDenial is the authorizer's error for altering a config resource:
// topic configs need the topic, broker configs the cluster.
func configDenial(t kmsg.ConfigResourceType) int16 {
	if t == kmsg.ConfigResourceTypeTopic {
		return kerr.TopicAuthorizationFailed.Code
	}
	return kerr.ClusterAuthorizationFailed.Code
}

func sortedStrings(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// topicDenial refuses a Produce or Fetch naming a topic the principal may
// not produce to or fetch from. The whole request is refused (every
// partition TOPIC_AUTHORIZATION_FAILED), also its allowed topics, where a
// broker would serve those: clients rarely mix, and a partial answer would
// need the handlers' splitting. Nothing is sent upstream.
func (cc *clientConn) topicDenial(p *Policy, req kmsg.Request) kmsg.Response {
	if len(p.Topics) == 0 {
		return nil
	}
	principal := cc.Principal()
	denied := func(topic, op string) bool { return !p.allowsTopic(principal, topic, op) }
	var resp kmsg.Response
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		name := func(t kmsg.ProduceRequestTopic) string {
			if r.Version >= 13 { // by topic id (KIP-516)
				n, _ := cc.srv.topicIDs.name(VirtualTopicID(t.TopicID))
				return n
			}
			return t.Topic
		}
		if !slices.ContainsFunc(r.Topics, func(t kmsg.ProduceRequestTopic) bool { return denied(name(t), "produce") }) {
			return nil
		}
		pr := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.BaseOffset = part.Partition, kerr.TopicAuthorizationFailed.Code, -1
				rt.Partitions = append(rt.Partitions, rp)
			}
			pr.Topics = append(pr.Topics, rt)
		}
		resp = pr
	case *kmsg.FetchRequest:
		name := func(t kmsg.FetchRequestTopic) string {
			if r.Version >= 13 { // by topic id
				n, _ := cc.srv.topicIDs.name(VirtualTopicID(t.TopicID))
				return n
			}
			return t.Topic
		}
		if !slices.ContainsFunc(r.Topics, func(t kmsg.FetchRequestTopic) bool { return denied(name(t), "fetch") }) {
			return nil
		}
		fr := r.ResponseKind().(*kmsg.FetchResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, kerr.TopicAuthorizationFailed.Code
				rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = -1, -1, -1
				rt.Partitions = append(rt.Partitions, rp)
			}
			fr.Topics = append(fr.Topics, rt)
		}
		resp = fr
	default:
		return nil
	}
	cc.srv.metrics.policyDenials.WithLabelValues(principal, kmsg.NameForKey(req.Key())).Inc()
	if cc.log.IsDebug() {
		cc.log.Debug("request denied by policy", "principal", principal, "api", kmsg.NameForKey(req.Key()))
	}
	return resp
}

// metadataView is what a Metadata answer is filtered with: the policy and
// the principal when the request was read.
type metadataView struct {
	cc        *clientConn
	policy    *Policy
	principal string
}

// metadataFilter returns the filter for req's answer, nil when req is not
// a Metadata request or no topic rule applies.
func (cc *clientConn) metadataFilter(req kmsg.Request) *metadataView {
	if _, ok := req.(*kmsg.MetadataRequest); !ok {
		return nil
	}
	p := cc.srv.policy.Load()
	if p == nil || len(p.Topics) == 0 {
		return nil
	}
	return &metadataView{cc: cc, policy: p, principal: cc.Principal()}
}

// filterMetadata applies the describe rules to a Metadata answer: a topic
// the principal may not describe is left out of an all-topics answer (as a
// broker hides it) and answered TOPIC_AUTHORIZATION_FAILED when the
// request named it.
func (v *metadataView) filterMetadata(req *kmsg.MetadataRequest, resp *kmsg.MetadataResponse) {
	named := len(req.Topics) > 0 // v0 lists all topics with an empty list, v1+ with null
	kept := resp.Topics[:0]
	hidden := 0
	for _, t := range resp.Topics {
		if t.Topic == nil || v.policy.allowsTopic(v.principal, *t.Topic, "describe") {
			kept = append(kept, t)
			continue
		}
		hidden++
		if named {
			t.ErrorCode, t.Partitions, t.IsInternal = kerr.TopicAuthorizationFailed.Code, nil, false
			kept = append(kept, t)
		}
	}
	resp.Topics = kept
	if hidden > 0 && named {
		v.cc.srv.metrics.policyDenials.WithLabelValues(v.principal, "Metadata").Inc()
	}
}

// GroupRule allows principals to use consumer groups (names or globs):
// join, sync, heartbeat, leave, commit and fetch offsets, describe, find
// the coordinator.
type GroupRule struct {
	Principals []string
	Groups     []string
}

// allowsGroup reports whether principal may use group.
func (p *Policy) allowsGroup(principal, group string) bool {
	if len(p.Groups) == 0 {
		return true
	}
	for _, r := range p.Groups {
		if matchAny(r.Principals, principal) && matchAny(r.Groups, group) {
			return true
		}
	}
	return false
}

// groupDenial refuses a group request naming a group the principal may not
// use, answered GROUP_AUTHORIZATION_FAILED wherever the response has a
// place for it (a request naming several groups is refused whole).
func (cc *clientConn) groupDenial(p *Policy, req kmsg.Request) kmsg.Response {
	if len(p.Groups) == 0 {
		return nil
	}
	principal := cc.Principal()
	denied := func(groups ...string) bool {
		return slices.ContainsFunc(groups, func(g string) bool { return !p.allowsGroup(principal, g) })
	}
	code := kerr.GroupAuthorizationFailed.Code
	var resp kmsg.Response
	switch r := req.(type) {
	case *kmsg.FindCoordinatorRequest:
		if r.CoordinatorType != 0 { // transactional ids are not governed
			return nil
		}
		keys := r.CoordinatorKeys
		if r.Version < 4 {
			keys = []string{r.CoordinatorKey}
		}
		if !denied(keys...) {
			return nil
		}
		fr := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
		fr.ErrorCode, fr.NodeID, fr.Port = code, -1, -1
		for _, k := range r.CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.NodeID, c.Port, c.ErrorCode = k, -1, -1, code
			fr.Coordinators = append(fr.Coordinators, c)
		}
		resp = fr
	case *kmsg.JoinGroupRequest:
		if !denied(r.Group) {
			return nil
		}
		jr := r.ResponseKind().(*kmsg.JoinGroupResponse)
		jr.ErrorCode, jr.Generation = code, -1
		resp = jr
	case *kmsg.SyncGroupRequest:
		if !denied(r.Group) {
			return nil
		}
		sr := r.ResponseKind().(*kmsg.SyncGroupResponse)
		sr.ErrorCode = code
		resp = sr
	case *kmsg.HeartbeatRequest:
		if !denied(r.Group) {
			return nil
		}
		hr := r.ResponseKind().(*kmsg.HeartbeatResponse)
		hr.ErrorCode = code
		resp = hr
	case *kmsg.LeaveGroupRequest:
		if !denied(r.Group) {
			return nil
		}
		lr := r.ResponseKind().(*kmsg.LeaveGroupResponse)
		lr.ErrorCode = code
		resp = lr
	case *kmsg.OffsetCommitRequest:
		if !denied(r.Group) {
			return nil
		}
		or := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			or.Topics = append(or.Topics, rt)
		}
		resp = or
	case *kmsg.OffsetFetchRequest:
		groups := []string{r.Group}
		if r.Version >= 8 {
			groups = groups[:0]
			for _, g := range r.Groups {
				groups = append(groups, g.Group)
			}
		}
		if !denied(groups...) {
			return nil
		}
		or := r.ResponseKind().(*kmsg.OffsetFetchResponse)
		or.ErrorCode = code
		for _, g := range r.Groups {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, code
			or.Groups = append(or.Groups, rg)
		}
		resp = or
	case *kmsg.DescribeGroupsRequest:
		if !denied(r.Groups...) {
			return nil
		}
		dr := r.ResponseKind().(*kmsg.DescribeGroupsResponse)
		for _, g := range r.Groups {
			rg := kmsg.NewDescribeGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, code
			dr.Groups = append(dr.Groups, rg)
		}
		resp = dr
	case *kmsg.ConsumerGroupHeartbeatRequest:
		if !denied(r.Group) {
			return nil
		}
		hr := r.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
		hr.ErrorCode = code
		resp = hr
	case *kmsg.ConsumerGroupDescribeRequest:
		if !denied(r.Groups...) {
			return nil
		}
		dr := r.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
		for _, g := range r.Groups {
			rg := kmsg.NewConsumerGroupDescribeResponseGroup()
			rg.Group, rg.ErrorCode = g, code
			dr.Groups = append(dr.Groups, rg)
		}
		resp = dr
	default:
		return nil
	}
	cc.srv.metrics.policyDenials.WithLabelValues(principal, kmsg.NameForKey(req.Key())).Inc()
	if cc.log.IsDebug() {
		cc.log.Debug("request denied by policy", "principal", principal, "api", kmsg.NameForKey(req.Key()))
	}
	return resp
}

// TxnRule allows principals to use transactional ids (names or globs).
type TxnRule struct {
	Principals       []string
	TransactionalIDs []string
}

// allowsTxn reports whether principal may use transactional id id.
func (p *Policy) allowsTxn(principal, id string) bool {
	if len(p.Txns) == 0 {
		return true
	}
	for _, r := range p.Txns {
		if matchAny(r.Principals, principal) && matchAny(r.TransactionalIDs, id) {
			return true
		}
	}
	return false
}

// txnDenial refuses a transactional request naming a transactional id the
// principal may not use, with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
// Idempotent producers (InitProducerID without a transactional id) are
// not governed.
func (cc *clientConn) txnDenial(p *Policy, req kmsg.Request) kmsg.Response {
	if len(p.Txns) == 0 {
		return nil
	}
	principal := cc.Principal()
	denied := func(ids ...string) bool {
		return slices.ContainsFunc(ids, func(id string) bool { return !p.allowsTxn(principal, id) })
	}
	code := kerr.TransactionalIDAuthorizationFailed.Code
	var resp kmsg.Response
	switch r := req.(type) {
	case *kmsg.FindCoordinatorRequest:
		if r.CoordinatorType != 1 {
			return nil
		}
		keys := r.CoordinatorKeys
		if r.Version < 4 {
			keys = []string{r.CoordinatorKey}
		}
		if !denied(keys...) {
			return nil
		}
		fr := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
		fr.ErrorCode, fr.NodeID, fr.Port = code, -1, -1
		for _, k := range r.CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.NodeID, c.Port, c.ErrorCode = k, -1, -1, code
			fr.Coordinators = append(fr.Coordinators, c)
		}
		resp = fr
	case *kmsg.InitProducerIDRequest:
		if r.TransactionalID == nil || !denied(*r.TransactionalID) {
			return nil
		}
		ir := r.ResponseKind().(*kmsg.InitProducerIDResponse)
		ir.ErrorCode, ir.ProducerID, ir.ProducerEpoch = code, -1, -1
		resp = ir
	case *kmsg.AddPartitionsToTxnRequest:
		if !denied(r.TransactionalID) {
			return nil
		}
		ar := r.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			ar.Topics = append(ar.Topics, rt)
		}
		resp = ar
	case *kmsg.AddOffsetsToTxnRequest:
		if !denied(r.TransactionalID) {
			return nil
		}
		ar := r.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
		ar.ErrorCode = code
		resp = ar
	case *kmsg.EndTxnRequest:
		if !denied(r.TransactionalID) {
			return nil
		}
		er := r.ResponseKind().(*kmsg.EndTxnResponse)
		er.ErrorCode = code
		resp = er
	case *kmsg.TxnOffsetCommitRequest:
		if !denied(r.TransactionalID) {
			return nil
		}
		tr := r.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			tr.Topics = append(tr.Topics, rt)
		}
		resp = tr
	default:
		return nil
	}
	cc.srv.metrics.policyDenials.WithLabelValues(principal, kmsg.NameForKey(req.Key())).Inc()
	if cc.log.IsDebug() {
		cc.log.Debug("request denied by policy", "principal", principal, "api", kmsg.NameForKey(req.Key()))
	}
	return resp
}
