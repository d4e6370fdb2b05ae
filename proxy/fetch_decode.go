package proxy

// A client's Fetch request decoded into the connection's reused request
// (fetchScratch.decoded) without allocating. kmsg's decoder zeroes the
// topic array it reuses, so every topic's partition array was made anew:
// the one allocation a forwarded Fetch still made per request
// (BenchmarkFetchForwardedLarge, allocs/op). This decoder takes only the
// plain shape a consumer sends - no tagged fields, no forgotten topics, no
// null or negative lengths - and leaves anything else (and every malformed
// request, with kmsg's error) to kmsg; what it accepts it decodes to the
// same fields kmsg would (TestDecodeFetchPlainMatchesKmsg,
// FuzzDecodeFetchPlain).

import (
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// decodeFetchPlain decodes src (the body after the request header) into
// req, whose Version is set and whose Topics array (length 0) and Rack
// are the previous decode's: each topic keeps its partition array, and a
// topic name or rack equal to the previous one keeps its string. false
// when src is not of the plain shape (req is then garbage: the caller
// resets it for kmsg).
func decodeFetchPlain(src []byte, req *kmsg.FetchRequest) bool {
	v := req.Version
	flex := v >= 12
	topics, rack := req.Topics, req.Rack
	*req = kmsg.FetchRequest{Version: v}
	req.Default()
	b := kbin.Reader{Src: src}
	length := func(short bool) int {
		switch {
		case flex:
			return int(b.Uvarint()) - 1
		case short:
			return int(b.Int16())
		}
		return int(b.Int32())
	}
	noTags := func() bool { return !flex || b.Uvarint() == 0 }
	if v <= 14 {
		req.ReplicaID = b.Int32()
	}
	req.MaxWaitMillis = b.Int32()
	req.MinBytes = b.Int32()
	if v >= 3 {
		req.MaxBytes = b.Int32()
	}
	if v >= 4 {
		req.IsolationLevel = b.Int8()
	}
	if v >= 7 {
		req.SessionID = b.Int32()
		req.SessionEpoch = b.Int32()
	}
	nt := length(false)
	// kmsg's bounds (the least a topic or partition takes), so a huge
	// count grows nothing.
	if !b.Ok() || nt < 0 || nt*2 > len(b.Src) {
		return false
	}
	if nt > cap(topics) {
		topics = append(topics[:cap(topics)], make([]kmsg.FetchRequestTopic, nt-cap(topics))...)
	}
	topics = topics[:nt]
	for i := range topics {
		t := &topics[i]
		parts, name := t.Partitions[:0], t.Topic
		*t = kmsg.FetchRequestTopic{}
		if v <= 12 {
			n := length(true)
			if n < 0 {
				return false
			}
			t.Topic = keptString(b.Span(n), name)
		}
		if v >= 13 {
			copy(t.TopicID[:], b.Span(16))
		}
		np := length(false)
		if !b.Ok() || np < 0 || np*16 > len(b.Src) {
			return false
		}
		for range np {
			p := kmsg.NewFetchRequestTopicPartition()
			p.Partition = b.Int32()
			if v >= 9 {
				p.CurrentLeaderEpoch = b.Int32()
			}
			p.FetchOffset = b.Int64()
			if v >= 12 {
				p.LastFetchedEpoch = b.Int32()
			}
			if v >= 5 {
				p.LogStartOffset = b.Int64()
			}
			p.PartitionMaxBytes = b.Int32()
			if !noTags() {
				return false
			}
			parts = append(parts, p)
		}
		t.Partitions = parts
		if !noTags() || !b.Ok() {
			return false
		}
	}
	req.Topics = topics
	if v >= 7 && length(false) > 0 { // ForgottenTopics: kmsg leaves nil for 0 or null
		return false
	}
	if v >= 11 {
		n := length(true)
		if n < 0 {
			return false
		}
		req.Rack = keptString(b.Span(n), rack)
	}
	return noTags() && b.Ok()
}

// keptString is s as a string: prev itself when equal, so a name the
// previous decode read is not allocated again.
func keptString(s []byte, prev string) string {
	if string(s) == prev {
		return prev
	}
	return string(s)
}
