package proxy

// AddPartitionsToTxn (key 24), accepted v0-3: the client versions. v4+ is the
// broker-to-broker batched form (KIP-890) and is not advertised.
// Route: the transaction's coordinator on the transaction's cluster. The
// first successful add begins the transaction on the produce cluster of its
// topics (txn_producers.go); upstream the id's session there is created on
// first use.
// Rewrites: ProducerID/ProducerEpoch, virtual to the cluster's session.
// Refusals, nothing forwarded:
//   - a topic routed to a cluster other than the transaction's: those
//     partitions INVALID_TXN_STATE, the rest OPERATION_NOT_ATTEMPTED, as a
//     broker answers a partly invalid request, and kproxy logs why;
//   - a topic not yet in the transaction whose produce is held for a
//     cutover: every partition CONCURRENT_TRANSACTIONS, which clients retry
//     (the transaction begins after the flip, on the new cluster);
//   - a PID or epoch that is not the id's current virtual session:
//     INVALID_PRODUCER_ID_MAPPING or PRODUCER_FENCED (INVALID_PRODUCER_EPOCH
//     before v2), as the coordinator answers.
// With several instances (instances.go) an instance that does not
// coordinate the transactional id answers NOT_COORDINATOR; the one that does forwards
// the request unchanged (txn_instances.go).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	errorFillers[kmsg.AddPartitionsToTxn.Int16()] = fillErrors(func(req *kmsg.AddPartitionsToTxnRequest, resp *kmsg.AddPartitionsToTxnResponse, code int16) {
		fillAddPartitionsToTxn(req, resp, func(string) int16 { return code })
	})
}

// handleAddPartitionsToTxn answers on the response goroutine (apis.go: answerLater).
func handleAddPartitionsToTxn(rc *reqCtx, req *kmsg.AddPartitionsToTxnRequest) kmsg.Response {
	s := rc.srv()
	p := &s.pids
	refuse := func(code func(topic string) int16) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
		fillAddPartitionsToTxn(req, resp, code)
		return resp
	}
	all := func(code int16) func(string) int16 { return func(string) int16 { return code } }
	if resp := s.notCoordinator(coordTxn, req.TransactionalID, req); resp != nil {
		return resp // another instance coordinates the id (instances.go)
	}
	if s.txnDirect() {
		return rc.addPartitionsToTxnDirect(req) // several instances (txn_instances.go)
	}

	t, code := p.txnEnter(req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Version, 2)
	if code != 0 {
		return refuse(all(code))
	}
	defer t.op.Unlock()

	router := s.routes()
	cluster := p.txnOpenCluster(req.TransactionalID)
	off := map[string]bool{}
	topics := make([]string, 0, len(req.Topics))
	for _, tp := range req.Topics {
		c := router.ProduceCluster(tp.Topic, rc.client)
		if cluster == "" {
			cluster = c
		}
		if c != cluster {
			off[tp.Topic] = true
			rc.cc.log.Warn("refusing a transaction that would span clusters", "transactional_id", req.TransactionalID, "topic", tp.Topic, "route", c, "txn_cluster", cluster)
		}
		topics = append(topics, tp.Topic)
	}
	if len(off) > 0 {
		return refuse(func(topic string) int16 {
			if off[topic] {
				return kerr.InvalidTxnState.Code
			}
			return kerr.OperationNotAttempted.Code
		})
	}

	// Record first, then look at the holds (see txn_producers.go).
	added := p.txnAddTopics(t, topics)
	for _, name := range added {
		if s.holds.isHeld(name) {
			p.txnDropTopics(t, added)
			if rc.cc.log.IsDebug() {
				rc.cc.log.Debug("transaction waits for a cutover hold", "transactional_id", req.TransactionalID, "topic", name)
			}
			return refuse(all(kerr.ConcurrentTransactions.Code))
		}
	}

	u, code := rc.txnSessionFor(t, cluster)
	if code != 0 {
		p.txnDropTopics(t, added)
		return refuse(all(code))
	}
	req.ProducerID, req.ProducerEpoch = u.pid, u.epoch
	r := rc.forwardCoordinator(cluster, coordTxn, req.TransactionalID, req)
	resp, ok := r.(*kmsg.AddPartitionsToTxnResponse)
	if !ok {
		p.txnDropTopics(t, added)
		return r
	}
	// A topic is in the transaction once one of its partitions is; a
	// transaction is open once anything is in it.
	in := map[string]bool{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode == 0 {
				in[rt.Topic] = true
			}
		}
	}
	var failed []string
	for _, name := range added {
		if !in[name] {
			failed = append(failed, name)
		}
	}
	if len(in) > 0 {
		p.txnBegin(t, cluster)
	}
	p.txnDropTopics(t, failed)
	return resp
}

func fillAddPartitionsToTxn(req *kmsg.AddPartitionsToTxnRequest, resp *kmsg.AddPartitionsToTxnResponse, code func(topic string) int16) {
	for _, t := range req.Topics {
		rt := kmsg.NewAddPartitionsToTxnResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p, code(t.Topic)
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
}
