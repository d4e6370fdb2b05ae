package proxy

// Leader epochs: kproxy shows clients no epochs at all ("scheme B" in
// kafka-protocol-notes §2.1), from the first byte a client ever sees:
// every epoch field in a response is -1, every epoch a client sends is
// replaced by -1 before it goes upstream (so a broker never fences it), and
// the PartitionLeaderEpoch of every fetched record batch is -1.
//
// Why not monotonic virtual epochs: each cluster numbers epochs on its own,
// so a route change would move a partition from (say) epoch 57 to epoch 3.
// Java drops metadata with a lower epoch and stalls; librdkafka ignores it;
// franz-go retries. Virtual epochs can hide that, at the cost of per-
// partition state that must survive restarts and agree across instances.
// With no epochs, clients skip epoch validation (Java only validates when it
// knows both the position's and the leader's epoch; OffsetForLeaderEpoch is
// advertised at v2 only, below the v3 Java validates with), nothing regresses
// on a route change, and kproxy keeps no epoch state. The cost: clients lose
// log-truncation detection through kproxy (unclean leader elections on an
// upstream are not detected by consumers). Switching to virtual epochs later
// would break franz-go, which refuses -1 after it saw a real epoch, so this
// is a one-way choice (docs/decisions/003-no-leader-epochs.md).

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// noEpoch is the "unknown epoch" sentinel.
const noEpoch int32 = -1

// clearBatchEpochs sets PartitionLeaderEpoch (bytes 12-15, outside the CRC)
// to -1 in every v2 record batch of a fetched record set, in place. Legacy
// message sets (magic 0/1) have no such field and are left alone; a
// truncated final batch (normal, KIP-74) is left alone.
func clearBatchEpochs(records []byte) {
	for len(records) >= 17 {
		n := int(int32(binary.BigEndian.Uint32(records[8:]))) + 12
		if n < 17 || n > len(records) {
			return
		}
		if records[16] == 2 {
			binary.BigEndian.PutUint32(records[12:], 0xffffffff) // -1
		}
		records = records[n:]
	}
}

// Requests: every epoch a client sends becomes -1, so no broker fences it.

func epochsFetchRequestPartition(p *kmsg.FetchRequestTopicPartition) {
	p.CurrentLeaderEpoch, p.LastFetchedEpoch = noEpoch, noEpoch
}

func epochsListOffsetsRequestPartition(p *kmsg.ListOffsetsRequestTopicPartition) {
	p.CurrentLeaderEpoch = noEpoch
}

func epochsOffsetForLeaderEpochRequestPartition(p *kmsg.OffsetForLeaderEpochRequestTopicPartition) {
	p.CurrentLeaderEpoch = noEpoch
}

// Answers: every epoch field is -1.

// epochsFetchPartition clears a fetch answer's epochs in place (record
// batches alias the upstream frame, which is what the client gets).
func epochsFetchPartition(p *kmsg.FetchResponseTopicPartition) {
	p.CurrentLeader.LeaderEpoch = noEpoch
	p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset = -1, -1
	clearBatchEpochs(p.RecordBatches)
}

func epochsProducePartition(p *kmsg.ProduceResponseTopicPartition) {
	p.CurrentLeader.LeaderEpoch = noEpoch
}

func epochsListOffsetsPartition(p *kmsg.ListOffsetsResponseTopicPartition) {
	p.LeaderEpoch = noEpoch
}

// epochsOffsetForLeaderEpochPartition: the answer's epoch is the one the
// end offset belongs to; a client that is shown no epochs gets none here
// either (its EndOffset is translated by the offsets step).
func epochsOffsetForLeaderEpochPartition(p *kmsg.OffsetForLeaderEpochResponseTopicPartition) {
	p.LeaderEpoch = noEpoch
}

func epochsMetadataPartition(p *kmsg.MetadataResponseTopicPartition) {
	p.LeaderEpoch = noEpoch
}

// clearRequestEpochs removes epochs from requests a coordinator stores
// (committed offsets carry the epoch of the consumed record).
func clearRequestEpochs(req kmsg.Request) {
	switch r := req.(type) {
	case *kmsg.OffsetCommitRequest:
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				r.Topics[i].Partitions[j].LeaderEpoch = noEpoch
			}
		}
	case *kmsg.TxnOffsetCommitRequest:
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				r.Topics[i].Partitions[j].LeaderEpoch = noEpoch
			}
		}
	}
}

// clearResponseEpochs removes epochs from coordinator answers (offsets
// committed before clients moved to kproxy may carry real epochs).
func clearResponseEpochs(resp kmsg.Response) {
	r, ok := resp.(*kmsg.OffsetFetchResponse)
	if !ok {
		return
	}
	for i := range r.Topics {
		for j := range r.Topics[i].Partitions {
			r.Topics[i].Partitions[j].LeaderEpoch = noEpoch
		}
	}
	for g := range r.Groups {
		for i := range r.Groups[g].Topics {
			for j := range r.Groups[g].Topics[i].Partitions {
				r.Groups[g].Topics[i].Partitions[j].LeaderEpoch = noEpoch
			}
		}
	}
}
