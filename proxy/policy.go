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
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
)

// AdminRule allows principals (names or globs, config.MatchGlob) some admin
// operations (adminOps names, or "*").
type AdminRule struct {
	Principals []string
	Operations []string
}

// TopicRule allows principals some operations ("produce", "fetch",
// "describe", or "*") on topics (names or globs, config.MatchGlob).
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
		if config.MatchGlob(g, s) {
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
			if config.MatchGlob(g, principal) {
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
	if resp := cc.keyedDenial(p, req); resp != nil {
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
		if !slices.ContainsFunc(r.Topics, func(t kmsg.ProduceRequestTopic) bool {
			return denied(cc.topicNamed(r.Version >= 13, t.Topic, t.TopicID), "produce")
		}) {
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
		if !slices.ContainsFunc(r.Topics, func(t kmsg.FetchRequestTopic) bool {
			return denied(cc.topicNamed(r.Version >= 13, t.Topic, t.TopicID), "fetch")
		}) {
			return nil
		}
		fr := r.ResponseKind().(*kmsg.FetchResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rt.Partitions = append(rt.Partitions, fetchPartitionError(part.Partition, kerr.TopicAuthorizationFailed.Code))
			}
			fr.Topics = append(fr.Topics, rt)
		}
		resp = fr
	default:
		return nil
	}
	cc.countDenial(principal, req)
	return resp
}

// topicNamed is the topic a Produce or Fetch entry names: from v13 by
// topic id (KIP-516), before by name.
func (cc *clientConn) topicNamed(byID bool, topic string, id [16]byte) string {
	if byID {
		n, _ := cc.srv.topicIDs.name(VirtualTopicID(id))
		return n
	}
	return topic
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
//
// Operations limits the rule to some group operations (Kafka's ACL
// operations on a group): "read" (join, sync, heartbeat, leave, commit
// offsets), "describe" (find the coordinator, fetch offsets, describe),
// "delete" (DeleteGroups, OffsetDelete); empty or "*" is all of them.
type GroupRule struct {
	Principals []string
	Groups     []string
	Operations []string
}

// TxnRule allows principals to use transactional ids (names or globs).
type TxnRule struct {
	Principals       []string
	TransactionalIDs []string
}

func (r GroupRule) globs() (principals, keys []string) { return r.Principals, r.Groups }
func (r TxnRule) globs() (principals, keys []string)   { return r.Principals, r.TransactionalIDs }

func (r GroupRule) allowsOp(op string) bool {
	return len(r.Operations) == 0 || slices.Contains(r.Operations, "*") || slices.Contains(r.Operations, op)
}
func (r TxnRule) allowsOp(string) bool { return true }

// keyedRule is a GroupRule or a TxnRule: principals allowed some keys.
type keyedRule interface {
	globs() (principals, keys []string)
	allowsOp(op string) bool
}

// allowsKey reports whether one of rules allows principal op on the key
// (a group or a transactional id).
func allowsKey[R keyedRule](rules []R, principal, key, op string) bool {
	for _, r := range rules {
		principals, keys := r.globs()
		if r.allowsOp(op) && matchAny(principals, principal) && matchAny(keys, key) {
			return true
		}
	}
	return false
}

// keyedDenial refuses a group request naming a group the principal may
// not use, with GROUP_AUTHORIZATION_FAILED, and a transactional request
// naming a transactional id the principal may not use, with
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED: wherever the response has a place
// for it (a request naming several keys is refused whole). Each kind is
// governed only when it has at least one rule. Idempotent producers
// (InitProducerID without a transactional id) are not governed.
func (cc *clientConn) keyedDenial(p *Policy, req kmsg.Request) kmsg.Response {
	var keys []string
	var allowed func(principal, key string) bool
	var code int16
	if groups, op, ok := groupsNamed(req); ok && len(p.Groups) > 0 {
		keys, code = groups, kerr.GroupAuthorizationFailed.Code
		allowed = func(principal, g string) bool { return allowsKey(p.Groups, principal, g, op) }
	} else if ids, ok := txnIDsNamed(req); ok && len(p.Txns) > 0 {
		keys, code = ids, kerr.TransactionalIDAuthorizationFailed.Code
		allowed = func(principal, id string) bool { return allowsKey(p.Txns, principal, id, "") }
	} else {
		return nil
	}
	principal := cc.Principal()
	if !slices.ContainsFunc(keys, func(k string) bool { return !allowed(principal, k) }) {
		return nil
	}
	resp := denyKeyed(req, code)
	cc.countDenial(principal, req)
	return resp
}

// coordinatorKeys returns the keys a FindCoordinator request looks up when
// they are of type typ (coordGroup or coordTxn).
func coordinatorKeys(r *kmsg.FindCoordinatorRequest, typ int8) ([]string, bool) {
	if r.CoordinatorType != typ {
		return nil, false
	}
	if r.Version < 4 {
		return []string{r.CoordinatorKey}, true
	}
	return r.CoordinatorKeys, true
}

// groupsNamed returns the groups req names and the group operation it
// needs, as a broker's authorizer asks (FindCoordinator, OffsetFetch and
// the describe APIs: DESCRIBE; the membership APIs and OffsetCommit: READ;
// DeleteGroups and OffsetDelete: DELETE); false when req is not a group
// request.
func groupsNamed(req kmsg.Request) ([]string, string, bool) {
	switch r := req.(type) {
	case *kmsg.FindCoordinatorRequest:
		keys, ok := coordinatorKeys(r, coordGroup)
		return keys, "describe", ok
	case *kmsg.JoinGroupRequest:
		return []string{r.Group}, "read", true
	case *kmsg.SyncGroupRequest:
		return []string{r.Group}, "read", true
	case *kmsg.HeartbeatRequest:
		return []string{r.Group}, "read", true
	case *kmsg.LeaveGroupRequest:
		return []string{r.Group}, "read", true
	case *kmsg.OffsetCommitRequest:
		return []string{r.Group}, "read", true
	case *kmsg.ConsumerGroupHeartbeatRequest:
		return []string{r.Group}, "read", true
	case *kmsg.OffsetFetchRequest:
		if r.Version < 8 {
			return []string{r.Group}, "describe", true
		}
		groups := make([]string, 0, len(r.Groups))
		for _, g := range r.Groups {
			groups = append(groups, g.Group)
		}
		return groups, "describe", true
	case *kmsg.DescribeGroupsRequest:
		return r.Groups, "describe", true
	case *kmsg.ConsumerGroupDescribeRequest:
		return r.Groups, "describe", true
	case *kmsg.DeleteGroupsRequest:
		return r.Groups, "delete", true
	case *kmsg.OffsetDeleteRequest:
		return []string{r.Group}, "delete", true
	}
	return nil, "", false
}

// txnIDsNamed returns the transactional ids req names, false when req is
// not a transactional request (an InitProducerID without a transactional
// id is an idempotent producer's).
func txnIDsNamed(req kmsg.Request) ([]string, bool) {
	switch r := req.(type) {
	case *kmsg.FindCoordinatorRequest:
		return coordinatorKeys(r, coordTxn)
	case *kmsg.InitProducerIDRequest:
		if r.TransactionalID == nil {
			return nil, false
		}
		return []string{*r.TransactionalID}, true
	case *kmsg.AddPartitionsToTxnRequest:
		return []string{r.TransactionalID}, true
	case *kmsg.AddOffsetsToTxnRequest:
		return []string{r.TransactionalID}, true
	case *kmsg.EndTxnRequest:
		return []string{r.TransactionalID}, true
	case *kmsg.TxnOffsetCommitRequest:
		return []string{r.TransactionalID}, true
	}
	return nil, false
}

// denyKeyed answers a group or transactional request with code wherever
// its response has a place for it.
func denyKeyed(req kmsg.Request, code int16) kmsg.Response {
	switch r := req.(type) {
	case *kmsg.FindCoordinatorRequest:
		fr := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
		fr.ErrorCode, fr.NodeID, fr.Port = code, -1, -1
		for _, k := range r.CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.NodeID, c.Port, c.ErrorCode = k, -1, -1, code
			fr.Coordinators = append(fr.Coordinators, c)
		}
		return fr
	case *kmsg.JoinGroupRequest:
		jr := r.ResponseKind().(*kmsg.JoinGroupResponse)
		jr.ErrorCode, jr.Generation = code, -1
		return jr
	case *kmsg.InitProducerIDRequest:
		ir := r.ResponseKind().(*kmsg.InitProducerIDResponse)
		ir.ErrorCode, ir.ProducerID, ir.ProducerEpoch = code, -1, -1
		return ir
	case *kmsg.OffsetCommitRequest:
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
		return or
	case *kmsg.OffsetFetchRequest:
		or := r.ResponseKind().(*kmsg.OffsetFetchResponse)
		or.ErrorCode = code
		for _, g := range r.Groups {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, code
			or.Groups = append(or.Groups, rg)
		}
		return or
	case *kmsg.DescribeGroupsRequest:
		dr := r.ResponseKind().(*kmsg.DescribeGroupsResponse)
		for _, g := range r.Groups {
			rg := kmsg.NewDescribeGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, code
			dr.Groups = append(dr.Groups, rg)
		}
		return dr
	case *kmsg.ConsumerGroupDescribeRequest:
		dr := r.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
		for _, g := range r.Groups {
			rg := kmsg.NewConsumerGroupDescribeResponseGroup()
			rg.Group, rg.ErrorCode = g, code
			dr.Groups = append(dr.Groups, rg)
		}
		return dr
	case *kmsg.DeleteGroupsRequest, *kmsg.OffsetDeleteRequest:
		return denyAll(req) // GROUP_AUTHORIZATION_FAILED per group
	}
	// The top-level ErrorCode (SyncGroup, Heartbeat, LeaveGroup,
	// ConsumerGroupHeartbeat, AddOffsetsToTxn, EndTxn) or the API's
	// per-partition filler (AddPartitionsToTxn, TxnOffsetCommit).
	return errorResponse(req, code)
}

// countDenial counts a refusal of req by policy and logs it at debug
// level.
func (cc *clientConn) countDenial(principal string, req kmsg.Request) {
	cc.srv.metrics.policyDenials.WithLabelValues(principal, kmsg.NameForKey(req.Key())).Inc()
	if cc.log.IsDebug() {
		cc.log.Debug("request denied by policy", "principal", principal, "api", kmsg.NameForKey(req.Key()))
	}
}
