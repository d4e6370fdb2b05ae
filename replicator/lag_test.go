package replicator

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestRetentionRiskEstimate(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	old := now.Add(-50 * time.Minute)
	cases := []struct {
		name          string
		lag, lagBytes int64
		oldest        time.Time
		ret           topicRetention
		rate          float64
		want          time.Duration
		ok            bool
	}{
		{"caught up", 0, 0, old, topicRetention{deletes: true, ms: 3600_000, bytes: -1}, 0, 0, false},
		{"compacted only", 10, 100, old, topicRetention{deletes: false, ms: 3600_000, bytes: -1}, 0, 0, false},
		{"no limits", 10, 100, old, topicRetention{deletes: true, ms: -1, bytes: -1}, 1000, 0, false},
		{"time", 10, 100, old, topicRetention{deletes: true, ms: 3600_000, bytes: -1}, 0, 10 * time.Minute, true},
		{"time already due", 10, 100, now.Add(-2 * time.Hour), topicRetention{deletes: true, ms: 3600_000, bytes: -1}, 0, 0, true},
		{"time, oldest unknown", 10, 100, time.Time{}, topicRetention{deletes: true, ms: 3600_000, bytes: -1}, 0, 0, false},
		{"size", 10, 1000, old, topicRetention{deletes: true, ms: -1, bytes: 11000}, 100, 100 * time.Second, true},
		{"size, no produce", 10, 1000, old, topicRetention{deletes: true, ms: -1, bytes: 11000}, 0, 0, false},
		{"size exceeded", 10, 20000, old, topicRetention{deletes: true, ms: -1, bytes: 11000}, 0, 0, true},
		{"both: the sooner", 10, 1000, old, topicRetention{deletes: true, ms: 3600_000, bytes: 11000}, 100, 100 * time.Second, true},
	}
	for _, c := range cases {
		got, ok := retentionRisk(now, c.lag, c.lagBytes, c.oldest, c.ret, c.rate)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%s: risk = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A topic whose source retention will delete records before the stalled
// copy reads them is reported at risk (Status, Topics, a warning line); a
// topic with ample retention is not.
func TestRetentionRiskWarning(t *testing.T) {
	src, tgt := newClusters(t)
	cl := newClient(t, src.ListenAddrs())
	ctx := context.Background()
	adm := kadm.NewClient(cl)
	for topic, ms := range map[string]string{"short": "7200000", "long": "604800000"} {
		if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"retention.ms": &ms}, topic); err != nil {
			t.Fatal(err)
		}
	}
	// "short" holds records 1h55m old under a 2h retention: 5 minutes
	// left. "long" holds fresh records under 7 days.
	for i := 0; i < 20; i++ {
		rs := []*kgo.Record{
			{Topic: "short", Value: bytes.Repeat([]byte("x"), 100), Timestamp: time.Now().Add(-115 * time.Minute)},
			{Topic: "long", Value: bytes.Repeat([]byte("y"), 100), Timestamp: time.Now()},
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The target refuses every write: the copy stays behind.
	tgt.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	logs := &syncBuffer{}
	r := startReplicator(t, ctx, Options{SourceBrokers: src.ListenAddrs(), TargetBrokers: tgt.ListenAddrs(),
		Topics: []string{"short", "long"}, StateDir: t.TempDir(),
		Logger:           hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
		RetentionWarning: 30 * time.Minute, StatsInterval: 20 * time.Millisecond, RetryBackoff: 20 * time.Millisecond})
	defer r.Stop()
	deadline := time.Now().Add(20 * time.Second)
	var short, long PartitionStatus
	for {
		for _, s := range r.Status() {
			switch s.Topic {
			case "short":
				short = s
			case "long":
				long = s
			}
		}
		if short.RetentionAtRisk && long.RetentionRiskMillis >= 0 && strings.Contains(logs.String(), "source retention may delete") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no retention warning: short %+v, long %+v, logs:\n%s", short, long, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if short.LagRecords != 20 || short.LagBytes <= 0 || short.RecordLagMillis < (114*time.Minute).Milliseconds() {
		t.Errorf("short lag = %d records, %d bytes, %d ms; want 20 records, some bytes, about 115 min", short.LagRecords, short.LagBytes, short.RecordLagMillis)
	}
	if got := time.Duration(short.RetentionRiskMillis) * time.Millisecond; got <= 0 || got > 5*time.Minute {
		t.Errorf("short retention risk = %v, want a little under 5m", got)
	}
	if long.RetentionAtRisk || long.RetentionRiskMillis < (6*24*time.Hour).Milliseconds() {
		t.Errorf("long: at risk %v, risk %d ms; want not at risk, about 7 days", long.RetentionAtRisk, long.RetentionRiskMillis)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "source retention may delete") && strings.Contains(line, "topic=long") {
			t.Errorf("warning logged for the long-retention topic: %s", line)
		}
	}
	var sawShort bool
	for _, ts := range Topics(r.Status()) {
		if ts.Topic == "short" {
			sawShort = true
			if !ts.RetentionAtRisk || ts.LagRecords != 20 || ts.RetentionRiskMillis <= 0 {
				t.Errorf("topic status %+v does not show the partition's risk", ts)
			}
		}
	}
	if !sawShort {
		t.Error("Topics has no entry for short")
	}
}

// A partition that caught up after the monitor last measured its risk
// reports none: nothing uncopied is left for retention to delete.
func TestCaughtUpPartitionHasNoRetentionRisk(t *testing.T) {
	p := &partition{topic: "t", m: NewOffsetMap(MapMeta{Topic: "t"}, 0, 0), hwm: 0,
		risk: time.Minute, riskKnown: true, riskWarned: true}
	if s := p.status(); s.RetentionAtRisk || s.RetentionRiskMillis != -1 {
		t.Errorf("caught up: at risk %v, risk %d ms; want none", s.RetentionAtRisk, s.RetentionRiskMillis)
	}
	p.hwm = 5
	if s := p.status(); !s.RetentionAtRisk || s.RetentionRiskMillis != time.Minute.Milliseconds() {
		t.Errorf("5 records behind: at risk %v, risk %d ms; want the last measure", s.RetentionAtRisk, s.RetentionRiskMillis)
	}
}
