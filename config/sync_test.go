package config

import (
	"strings"
	"testing"
	"time"
)

// The sync keys parse, default as documented and are validated with their
// paths; the allow/deny lists decide which topic config keys are synced.
func TestReplicationSyncConfig(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Replication.Sync
	if !s.TopicConfigs || !s.Partitions || s.ACLs || c.Replication.WatchInterval != DefaultWatchInterval || c.Cutover.SampledVerifyRecords != 100 {
		t.Fatalf("defaults: %+v watch %s sampled %d", s, c.Replication.WatchInterval, c.Cutover.SampledVerifyRecords)
	}
	if s.SyncsConfigKey("message.timestamp.type") || s.SyncsConfigKey("confluent.placement.constraints") || !s.SyncsConfigKey("retention.ms") {
		t.Errorf("default deny list: timestamp %v confluent %v retention %v", s.SyncsConfigKey("message.timestamp.type"), s.SyncsConfigKey("confluent.placement.constraints"), s.SyncsConfigKey("retention.ms"))
	}

	c, err = Parse([]byte(minimal + "replication:\n  watch_interval: 250ms\n  sync:\n    topic_configs: false\n    partitions: false\n    acls: true\n    config_keys_allow: [\"retention.*\", cleanup.policy]\n    config_keys_deny: [retention.bytes]\ncutover:\n  sampled_verify_records: 7\n  require: [acls, sampled_verify]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s = c.Replication.Sync
	if s.Interval != 3*time.Second { // 12 passes of watch_interval
		t.Errorf("sync.interval default with watch_interval 250ms: %s, want 3s", s.Interval)
	}
	if s.TopicConfigs || s.Partitions || !s.ACLs || c.Replication.WatchInterval != 250*time.Millisecond || c.Cutover.SampledVerifyRecords != 7 {
		t.Fatalf("parsed: %+v watch %s sampled %d", s, c.Replication.WatchInterval, c.Cutover.SampledVerifyRecords)
	}
	for k, want := range map[string]bool{"retention.ms": true, "cleanup.policy": true, "retention.bytes": false, "max.message.bytes": false, "message.timestamp.type": true} {
		// config_keys_deny replaced the default list: message.timestamp.type
		// is allowed by no allow entry, so it stays out anyway.
		if k == "message.timestamp.type" {
			want = false
		}
		if got := s.SyncsConfigKey(k); got != want {
			t.Errorf("SyncsConfigKey(%s) = %v, want %v", k, got, want)
		}
	}

	c, err = Parse([]byte(minimal + "replication:\n  watch_interval: 1s\n  sync: { interval: 30s }\n"))
	if err != nil || c.Replication.Sync.Interval != 30*time.Second {
		t.Fatalf("sync.interval 30s: %v, %v", err, c)
	}
	_, err = Parse([]byte(minimal + "replication:\n  watch_interval: 1s\n  sync: { interval: 500ms }\n"))
	if err == nil || !strings.Contains(err.Error(), "replication.sync.interval") {
		t.Errorf("a sync.interval shorter than watch_interval: %v", err)
	}
	_, err = Parse([]byte(minimal + "replication:\n  watch_interval: 10ms\n  sync:\n    config_keys_deny: [\"[\"]\ncutover:\n  sampled_verify_records: 0\n"))
	for _, want := range []string{"replication.watch_interval", "replication.sync.config_keys_deny[0]", "cutover.sampled_verify_records"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

// replication.produce_timeout: 60 s by default, taken as given within 5 s
// to 10 m, and named in the error outside.
func TestReplicationProduceTimeout(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil || c.Replication.ProduceTimeout != time.Minute {
		t.Fatalf("default produce_timeout: %v, %v", err, c)
	}
	c, err = Parse([]byte(minimal + "replication:\n  produce_timeout: 10s\n"))
	if err != nil || c.Replication.ProduceTimeout != 10*time.Second {
		t.Fatalf("produce_timeout 10s: %v, %v", err, c)
	}
	for _, bad := range []string{"1s", "11m"} {
		_, err = Parse([]byte(minimal + "replication:\n  produce_timeout: " + bad + "\n"))
		if err == nil || !strings.Contains(err.Error(), "replication.produce_timeout") {
			t.Errorf("produce_timeout %s: %v, want an error naming replication.produce_timeout", bad, err)
		}
	}
}
