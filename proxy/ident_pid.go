package proxy

// Producer ids: an idempotent producer (no transactional.id) gets a virtual
// PID from kproxy, so one producer can write to topics on both clusters and
// keep writing across a route change. kproxy obtains an upstream PID per
// (virtual PID, virtual epoch, cluster) lazily, on the first batch for that
// cluster, and rewrites the batch header's ProducerID and ProducerEpoch
// (bytes 43-52, under the CRC; CRC-32C over bytes 21.. is recomputed, the
// records are never decompressed). Sequence numbers pass through: a broker
// accepts any first sequence from a PID it has no state for, so a producer
// that moves to the other cluster mid-stream continues its sequence there.
//
// Virtual PIDs have bit 62 set and 62 random bits below it: brokers allocate
// PIDs upward from 0 in blocks of 1000 and never reach 2^62, so virtual and
// upstream PIDs cannot be confused, and instances need no coordination.
//
// Transactional producers keep their coordinator's real PID: a transactional
// id is pinned to one cluster and a transaction may not span clusters
// (00_produce.go and 24_add_partitions_to_txn.go refuse it).

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const virtualPIDBit = int64(1) << 62

func isVirtualPID(pid int64) bool { return pid >= virtualPIDBit }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type pidKey struct {
	vpid    int64
	vepoch  int16
	cluster string
}

type upstreamPID struct {
	pid   int64
	epoch int16
}

// producerIDs maps virtual producer sessions to upstream ones.
type producerIDs struct {
	mu sync.Mutex // guards m
	m  map[pidKey]upstreamPID
}

func newVirtualPID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return virtualPIDBit | int64(binary.BigEndian.Uint64(b[:])&(uint64(virtualPIDBit)-1))
}

// forget drops every upstream session of a virtual PID (after an epoch bump
// the client restarts its sequences, so it needs fresh upstream sessions).
func (p *producerIDs) forget(vpid int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.m {
		if k.vpid == vpid {
			delete(p.m, k)
		}
	}
}

// upstream returns the upstream session for a virtual one on cluster,
// initializing it with InitProducerId on any broker of the cluster.
func (rc *reqCtx) upstreamPID(cluster string, vpid int64, vepoch int16) (upstreamPID, int16) {
	s := rc.srv()
	k := pidKey{vpid, vepoch, cluster}
	s.pids.mu.Lock()
	u, ok := s.pids.m[k]
	s.pids.mu.Unlock()
	if ok {
		return u, 0
	}
	uc, err := rc.clusterFor(cluster)
	if err != nil {
		return u, kerr.UnknownServerError.Code
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionTimeoutMillis = -1
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, uc.cl)
	if err != nil {
		rc.cc.log.Warn("upstream InitProducerId failed", "cluster", cluster, "error", err)
		return u, kerr.NotLeaderForPartition.Code
	}
	if resp.ErrorCode != 0 {
		return u, resp.ErrorCode
	}
	u = upstreamPID{resp.ProducerID, resp.ProducerEpoch}
	s.pids.mu.Lock()
	s.pids.m[k] = u
	s.pids.mu.Unlock()
	return u, 0
}

// rewriteProducerID translates a produce partition's record batches from a
// virtual PID to cluster's upstream PID, in place. It returns a Kafka error
// code for the partition, or 0.
func (rc *reqCtx) rewriteProducerID(cluster string, records []byte) int16 {
	for len(records) >= 61 {
		n := int(int32(binary.BigEndian.Uint32(records[8:]))) + 12
		if n < 61 || n > len(records) {
			return kerr.CorruptMessage.Code
		}
		b := records[:n]
		records = records[n:]
		if b[16] != 2 {
			continue // legacy message sets carry no producer id
		}
		vpid := int64(binary.BigEndian.Uint64(b[43:]))
		if !isVirtualPID(vpid) {
			continue
		}
		vepoch := int16(binary.BigEndian.Uint16(b[51:]))
		u, code := rc.upstreamPID(cluster, vpid, vepoch)
		if code != 0 {
			return code
		}
		binary.BigEndian.PutUint64(b[43:], uint64(u.pid))
		binary.BigEndian.PutUint16(b[51:], uint16(u.epoch))
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	}
	return 0
}

// initVirtualProducer answers InitProducerId for an idempotent producer:
// a new virtual PID, or the same PID with the next epoch when the client
// asks to bump (KIP-360, v3+).
func (s *Server) initVirtualProducer(req *kmsg.InitProducerIDRequest) *kmsg.InitProducerIDResponse {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	if req.ProducerID >= 0 && isVirtualPID(req.ProducerID) && req.ProducerEpoch >= 0 && req.ProducerEpoch < 32767 {
		s.pids.forget(req.ProducerID)
		resp.ProducerID, resp.ProducerEpoch = req.ProducerID, req.ProducerEpoch+1
		return resp
	}
	if req.ProducerID >= 0 && !isVirtualPID(req.ProducerID) {
		resp.ErrorCode = kerr.InvalidProducerIDMapping.Code
		return resp
	}
	if req.ProducerID >= 0 {
		s.pids.forget(req.ProducerID) // epoch exhausted: a new PID
	}
	resp.ProducerID, resp.ProducerEpoch = newVirtualPID(), 0
	return resp
}

// txnClusterError explains a transaction that would span clusters.
func txnClusterError(txnID, topic, topicCluster, txnCluster string) string {
	return fmt.Sprintf("kproxy: transactional id %q is pinned to the %s cluster, but topic %q is routed to %s; a transaction may not span clusters", txnID, txnCluster, topic, topicCluster)
}
