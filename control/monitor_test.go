package control

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/replicator"
)

// A copy that is behind logs its progress and ETA at each progress round,
// and one line when it has caught up; a caught-up copy logs nothing.
func TestProgressLinesForACopyCatchingUp(t *testing.T) {
	var buf bytes.Buffer
	m := newMonitor(hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info}), nil, nil, nil)
	behind := ReplicationStatus{Partitions: []replicator.PartitionStatus{
		{Topic: "orders", Partition: 0, LagRecords: 4000, LagBytes: 1 << 20, CopyRecordsPerSec: 900, CatchUpMillis: 5000},
		{Topic: "orders", Partition: 1, CatchUpMillis: 0},
		{Topic: "audit", Partition: 0},
	}}
	m.logProgress(behind)
	out := buf.String()
	if !strings.Contains(out, "replication catching up: topic=orders to=target partitions_caught_up=1 partitions=2 lag_records=4000 lag_bytes=1048576 copy_records_per_s=900 eta=5s") {
		t.Errorf("progress line: %s", out)
	}
	if strings.Contains(out, "audit") {
		t.Errorf("a caught-up topic logged progress: %s", out)
	}
	buf.Reset()
	m.logProgress(ReplicationStatus{Partitions: []replicator.PartitionStatus{{Topic: "orders", Partition: 0}, {Topic: "orders", Partition: 1}}})
	if out := buf.String(); !strings.Contains(out, "replication caught up: topic=orders to=target") {
		t.Errorf("caught-up line: %s", out)
	}
	buf.Reset()
	m.logProgress(ReplicationStatus{Partitions: []replicator.PartitionStatus{{Topic: "orders", Partition: 0}}})
	if buf.Len() != 0 {
		t.Errorf("a copy that stays caught up logs again: %s", buf.String())
	}
}
