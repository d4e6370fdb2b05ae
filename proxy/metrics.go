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
	latency        map[int16]prometheus.Observer
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
		requests: map[int16]prometheus.Counter{},
		latency:  map[int16]prometheus.Observer{},
	}
	for k := int16(0); k <= 100; k++ {
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		name := kmsg.NameForKey(k)
		m.requests[k] = reqs.WithLabelValues(name)
		m.latency[k] = lat.WithLabelValues(name)
	}
	reg.MustRegister(m.connections, m.bytesIn, m.bytesOut, m.badFrames, m.upstreamErrors, reqs, lat)
	return m
}
