package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DeleteRecords and ListOffsets, split across three upstream leaders and
// merged: every partition's log start moves to the requested offset and
// the end offsets are the records produced.
func TestDeleteRecordsAndListOffsetsAcrossLeaders(t *testing.T) {
	srv, _ := newKfakeProxy(t, 3, kfake.SeedTopics(6, "del"))
	cl, ctx := proxyClient(t, srv, 20*time.Second, kgo.DefaultProduceTopic("del"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := int32(0); p < 6; p++ {
		for i := 0; i < 5; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	adm := kadm.NewClient(cl)
	del := kadm.Offsets{}
	for p := int32(0); p < 6; p++ {
		del.AddOffset("del", p, 2, -1)
	}
	resp, err := adm.DeleteRecords(ctx, del)
	if err != nil {
		t.Fatal(err)
	}
	resp.Each(func(r kadm.DeleteRecordsResponse) {
		if r.Err != nil || r.LowWatermark != 2 {
			t.Errorf("delete records %s/%d: low watermark %d, err %v", r.Topic, r.Partition, r.LowWatermark, r.Err)
		}
	})
	starts, err := adm.ListStartOffsets(ctx, "del")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, "del")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	starts.Each(func(o kadm.ListedOffset) {
		n++
		if o.Err != nil || o.Offset != 2 {
			t.Errorf("start offset of del/%d: %d, %v", o.Partition, o.Offset, o.Err)
		}
	})
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || o.Offset != 5 {
			t.Errorf("end offset of del/%d: %d, %v", o.Partition, o.Offset, o.Err)
		}
	})
	if n != 6 {
		t.Fatalf("%d partitions listed, want 6", n)
	}
}

// A topic config changed through kproxy lands on every cluster the topic is
// routed to (both, for a split route), and a real broker's config cannot be
// altered through the one virtual broker.
func TestAlterConfigsFollowTheTopicRoute(t *testing.T) {
	routes := routesHeader + "routes:\n  default: source\n  topics:\n    split: { produce: source, fetch: target }\n"
	srv, src, tgt := twoClusterProxy(t, tableFor(t, routes), "split")
	cl, ctx := proxyClient(t, srv, 20*time.Second)
	adm := kadm.NewClient(cl)
	v := "3600000"
	resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &v}}, "split")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resps {
		if r.Err != nil {
			t.Fatalf("alter %s: %v", r.Name, r.Err)
		}
	}
	for name, c := range map[string]*kfake.Cluster{"source": src, "target": tgt} {
		direct, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := kadm.NewClient(direct).DescribeTopicConfigs(ctx, "split")
		direct.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, cfg := range rc[0].Configs {
			if cfg.Key == "retention.ms" && cfg.Value != nil {
				got = *cfg.Value
			}
		}
		if got != v {
			t.Errorf("%s cluster: retention.ms = %q, want %q", name, got, v)
		}
	}
	bresp, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "log.retention.ms", Value: &v}}, 9)
	if err != nil {
		t.Fatal(err)
	}
	if len(bresp) != 1 || bresp[0].Err == nil {
		t.Fatalf("altering broker 9 (the virtual broker) should be refused: %+v", bresp)
	}
}
