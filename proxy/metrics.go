package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metrics are the proxy's Prometheus metrics, on the registry the caller
// passes in (so tests can run two proxies in one process). Per-API children
// are resolved once here, never per frame.
type metrics struct {
	connections    prometheus.Gauge
	bytesIn        prometheus.Counter
	bytesOut       prometheus.Counter
	badFrames      prometheus.Counter
	upstreamErrors *prometheus.CounterVec
	requests       map[int16]prometheus.Counter
	// Streaming-eligible Fetch answers by outcome (fetch_stream.go).
	fetchRelays                                 *prometheus.CounterVec
	fetchStreamed, fetchBuffered, fetchRelayCut prometheus.Counter
	// Large Produce requests read incrementally (produce_splice.go), by
	// outcome: spliced (bodies socket to socket), rebuilt (read back into
	// memory before dispatch), materialized (read back by the handler).
	produceSplices                                          *prometheus.CounterVec
	produceSpliced, produceSpliceRebuilt, produceSpliceRead prometheus.Counter
	// Produce answers written by the goroutine that read the broker's
	// answer, not the client's write loop (conn.go, directProduce).
	produceDirect prometheus.Counter

	// Resource limits (limits.go, docs/operations.md).
	bufferedBytes prometheus.Gauge
	closed        *prometheus.CounterVec // client connections closed by a limit, by reason
	refused       *prometheus.CounterVec // client connections refused at accept, by limit
	acceptErrors  prometheus.Counter
	dialFailures  *prometheus.CounterVec
	limits        *prometheus.GaugeVec   // configured value of each limit
	saslFailures  *prometheus.CounterVec // failed client authentications, by mechanism
	policyDenials *prometheus.CounterVec // requests refused by the policy, by principal and API
	latency       map[int16]prometheus.Observer

	// Per-client state (state_expiry.go), by kind: producer_sessions,
	// transactional_ids, group_memberships.
	stateEntries   *prometheus.GaugeVec
	stateExpired   *prometheus.CounterVec
	groupAmbiguous prometheus.Counter // canary group lookups that found several groups
	// readsReplanned counts read answers planned again after a cutover's
	// cap (replanAfterCap)
	readsReplanned prometheus.Counter
	// resends counts batches resent across a move of their topic
	// (ident_pid_resend.go), by outcome.
	resends *prometheus.CounterVec
	// unanswered counts idempotent batches whose upstream answer was lost
	// (produce_unanswered.go), by outcome
	unanswered *prometheus.CounterVec

	// Metadata listings (every topic) by where the answer came from
	// (metadata_view.go): shared, views, clusters.
	metadataListings *prometheus.CounterVec
	metadataShared   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kproxy_requests_total", Help: "Client requests by Kafka API.",
	}, []string{"api"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kproxy_request_duration_seconds",
		Help:    "Time from reading a client request to writing its response, by Kafka API.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"api"})
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kproxy_client_connections", Help: "Open client connections."}),
		bytesIn:     prometheus.NewCounter(prometheus.CounterOpts{Name: "kproxy_client_bytes_received_total", Help: "Bytes read from clients."}),
		bytesOut:    prometheus.NewCounter(prometheus.CounterOpts{Name: "kproxy_client_bytes_sent_total", Help: "Bytes written to clients."}),
		badFrames:   prometheus.NewCounter(prometheus.CounterOpts{Name: "kproxy_client_bad_frames_total", Help: "Connections closed for malformed, oversized or unsupported frames."}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_upstream_errors_total", Help: "Failed dials and writes to upstream brokers, by cluster.",
		}, []string{"cluster"}),
		produceSplices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_produce_splices_total",
			Help: "Large Produce requests from plaintext clients read incrementally, by outcome: spliced (batch bodies went client socket to broker socket through pipes), rebuilt (found unusual after splicing began: read back into memory, buffered path), materialized (read back by the handler: a topic became replicated meanwhile).",
		}, []string{"outcome"}),
		produceDirect: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kproxy_produce_direct_total",
			Help: "Produce answers written straight by the goroutine that read the broker's answer (a request with nothing else outstanding on its connection, sent upstream as one request), instead of the connection's write loop: one wake-up fewer each.",
		}),
		fetchRelays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_fetch_relays_total",
			Help: "Fetch answers eligible for the streaming relay, by outcome: streamed, buffered (not plain or small: read whole), closed (could not be completed after streaming began; the client connection was closed).",
		}, []string{"outcome"}),
		requests: map[int16]prometheus.Counter{},
		latency:  map[int16]prometheus.Observer{},
		bufferedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kproxy_buffered_bytes", Help: "Client request and response bytes held against limits.buffer_bytes.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_client_connections_closed_total", Help: "Client connections closed by a limit or by security: idle, read_timeout, write_timeout, tls_handshake, sasl_state, sasl_expired, passthrough (an identity that cannot be passed through) or upstream_auth (a broker refused the client's passthrough credential).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_client_connections_refused_total", Help: "Client connections closed at accept because a connection limit was reached: total or per_ip.",
		}, []string{"limit"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kproxy_accept_errors_total", Help: "Failed accepts on the client listener (retried with backoff).",
		}),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_upstream_dial_failures_total", Help: "Failed upstream dials, by cluster; each starts a dial backoff for that broker.",
		}, []string{"cluster"}),
		saslFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_sasl_authentication_failures_total", Help: "Client SASL authentications refused (wrong credentials or a malformed exchange), by mechanism.",
		}, []string{"mechanism"}),
		policyDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_policy_denials_total", Help: "Requests refused by kproxy's policy, by principal and Kafka API.",
		}, []string{"principal", "api"}),
		limits: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kproxy_limit", Help: "Configured resource limits (bytes, counts, or seconds for timeouts).",
		}, []string{"limit"}),
		stateEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kproxy_state_entries", Help: "Per-client state kproxy keeps, by kind: producer_sessions, transactional_ids, group_memberships.",
		}, []string{"kind"}),
		stateExpired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_state_expired_total", Help: "Per-client state entries dropped after their idle time (limits.producer_idle, transactional_idle, group_membership_grace), by kind.",
		}, []string{"kind"}),
		groupAmbiguous: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kproxy_canary_group_ambiguous_total", Help: "Group lookups (one per topic of a request) on a connection without group membership whose client instance (source IP, client.id, software) is a member of several groups subscribed to the topic: served as a member of no group.",
		}),
		readsReplanned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kproxy_reads_replanned_total", Help: "Partitions of Fetch, ListOffsets and OffsetForLeaderEpoch answers of replicated topics planned again because a cutover capped a topic's old home while the request was upstream (a consumer's long poll across a flip): translated through the old home's current map, not the one they were sent with.",
		}),
		resends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_produce_resends_total", Help: "Idempotent batches of a moved topic that the producer state noted on the old home at the flip point decided (decision 008), by outcome: old_home (already written there: sent there and answered as a duplicate), out_of_order (a sequence gap or a batch straddling the flip point: OUT_OF_ORDER_SEQUENCE_NUMBER).",
		}, []string{"outcome"}),
		unanswered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_produce_unanswered_total", Help: "Idempotent batches of replicated topics whose upstream answer was lost (a connection reset or timeout), each keeping its topic in flight for a cutover's drain until settled (produce_unanswered.go), by outcome: unanswered (the answer was lost), settled (its cluster answered a resend or a later batch), moved (its topic flipped away first), expired (no resend within 3 s), bounced (a held request of the same producer answered at once with NOT_LEADER_FOR_PARTITION, so the client can resend in order).",
		}, []string{"outcome"}),
		metadataListings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_metadata_listings_total", Help: "Metadata requests for every topic, by where the answer came from: shared (an encoded answer reused), views (built from kproxy's cached views of the clusters), clusters (at least one cluster asked).",
		}, []string{"source"}),
	}
	m.metadataShared = m.metadataListings.WithLabelValues("shared")
	for k := int16(0); k <= 100; k++ {
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		name := kmsg.NameForKey(k)
		m.requests[k] = reqs.WithLabelValues(name)
		m.latency[k] = lat.WithLabelValues(name)
	}
	m.fetchStreamed = m.fetchRelays.WithLabelValues("streamed")
	m.fetchBuffered = m.fetchRelays.WithLabelValues("buffered")
	m.fetchRelayCut = m.fetchRelays.WithLabelValues("closed")
	m.produceSpliced = m.produceSplices.WithLabelValues("spliced")
	m.produceSpliceRebuilt = m.produceSplices.WithLabelValues("rebuilt")
	m.produceSpliceRead = m.produceSplices.WithLabelValues("materialized")
	reg.MustRegister(m.connections, m.bytesIn, m.bytesOut, m.badFrames, m.upstreamErrors, m.fetchRelays, m.produceSplices, m.produceDirect, reqs, lat,
		m.bufferedBytes, m.closed, m.refused, m.acceptErrors, m.dialFailures, m.limits, m.saslFailures, m.policyDenials,
		m.stateEntries, m.stateExpired, m.groupAmbiguous, m.readsReplanned, m.resends, m.unanswered, m.metadataListings)
	for _, kind := range []string{stateProducerSessions, stateTxnIDs, stateGroupMemberships} {
		m.stateEntries.WithLabelValues(kind)
		m.stateExpired.WithLabelValues(kind)
	}
	return m
}

// setLimits exports the configured limits, so dashboards can draw usage
// against them.
func (m *metrics) setLimits(o Options) {
	l := o.Limits
	for name, v := range map[string]float64{
		"max_frame_bytes":                       float64(o.MaxFrameBytes),
		"max_inflight_per_conn":                 float64(o.MaxInflight),
		"max_connections":                       float64(l.MaxConnections),
		"max_connections_per_ip":                float64(l.MaxConnectionsPerIP),
		"buffer_bytes":                          float64(l.BufferBytes),
		"idle_timeout":                          l.IdleTimeout.Seconds(),
		"read_timeout":                          l.ReadTimeout.Seconds(),
		"write_timeout":                         l.WriteTimeout.Seconds(),
		"dial_timeout":                          l.DialTimeout.Seconds(),
		"upstream_write_timeout":                l.UpstreamWriteTimeout.Seconds(),
		"dial_backoff_min":                      l.DialBackoffMin.Seconds(),
		"dial_backoff_max":                      l.DialBackoffMax.Seconds(),
		"metadata_refresh_inflight_per_cluster": 1,
		"producer_idle":                         l.ProducerIdle.Seconds(),
		"transactional_idle":                    l.TransactionalIdle.Seconds(),
		"group_membership_grace":                l.GroupMembershipGrace.Seconds(),
	} {
		m.limits.WithLabelValues(name).Set(v)
	}
}
