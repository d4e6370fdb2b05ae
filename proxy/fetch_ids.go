package proxy

// In-place topic id patching for fetch answers passed through byte for byte.
// A Fetch v13+ answer names each topic by the upstream cluster's id; clients
// must see the virtual id. Re-encoding the answer would copy every record,
// so instead kproxy finds where each id sits in the upstream bytes and
// overwrites it (ids are fixed-size, outside any CRC).
//
// Where the ids sit is learned from kmsg itself, not from a hand-written
// layout: the decoded answer is re-encoded with its record sets emptied (a
// small "skeleton"), the ids are found in the skeleton (it holds no record
// bytes, so an id cannot appear by chance), and each skeleton offset is
// moved by the sizes of the record sets that precede it. Every patch site is
// checked to hold the expected upstream id before it is written; any
// surprise falls back to re-encoding.

import (
	"bytes"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// patchFetchTopicIDs rewrites the topic ids in body (the upstream answer fr
// was decoded from) to ids[i] for fr.Topics[i]. It reports false, having
// changed nothing, when it cannot do so exactly.
func patchFetchTopicIDs(body []byte, fr *kmsg.FetchResponse, ids [][16]byte) bool {
	if !fr.IsFlexible() || len(ids) != len(fr.Topics) {
		return false
	}
	// Skeleton: the same answer with no record bytes.
	var savedA [16][]byte
	saved := savedA[:0]
	for i := range fr.Topics {
		for j := range fr.Topics[i].Partitions {
			p := &fr.Topics[i].Partitions[j]
			saved = append(saved, p.RecordBatches)
			p.RecordBatches = nil
		}
	}
	bufp := getBuf() // the skeleton is only searched
	defer putBuf(bufp)
	skel := fr.AppendTo((*bufp)[:0])
	*bufp = skel
	k := 0
	for i := range fr.Topics {
		for j := range fr.Topics[i].Partitions {
			fr.Topics[i].Partitions[j].RecordBatches = saved[k]
			k++
		}
	}

	// Locate each topic's id in the skeleton, in order, and shift it by the
	// extra bytes the record sets before it take in the real answer.
	var sitesA [8]int
	sites := sitesA[:0]
	if len(fr.Topics) > len(sitesA) {
		sites = make([]int, 0, len(fr.Topics))
	}
	sites = sites[:len(fr.Topics)]
	from, shift, k := 0, 0, 0
	for i := range fr.Topics {
		old := fr.Topics[i].TopicID
		at := bytes.Index(skel[from:], old[:])
		if at < 0 {
			return false
		}
		at += from
		sites[i] = at + shift
		from = at + 16
		for range fr.Topics[i].Partitions {
			if n := len(saved[k]); n > 0 {
				// Compact nullable bytes: uvarint(len+1) then the bytes;
				// the skeleton's null is one byte (uvarint 0).
				shift += kbin.UvarintLen(uint32(n+1)) + n - 1
			}
			k++
		}
	}
	for i, at := range sites {
		old := fr.Topics[i].TopicID
		if at+16 > len(body) || !bytes.Equal(body[at:at+16], old[:]) {
			return false
		}
	}
	for i, at := range sites {
		copy(body[at:at+16], ids[i][:])
		fr.Topics[i].TopicID = ids[i]
	}
	return true
}
