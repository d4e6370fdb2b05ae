package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/hatest"
)

// Issue 14, item 8: the client matrix through three instances. Three
// `kproxy run` processes serve one virtual cluster (routes on the target,
// the control cluster); each client of the matrix (drivers) bootstraps from
// all three addresses, comma-separated, and runs matrixRun on a topic of
// its own whose three partitions are led one by each instance (spreadTopic),
// so every client produces to and fetches from every instance and finds
// its group's coordinator on one of them. The counts are smaller than
// TestClientMatrix's (which runs each client against both clusters through
// one kproxy): what this adds is the multi-broker view, not volume.
func TestClientMatrixThroughThreeInstances(t *testing.T) {
	const partitions = 3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	name := fmt.Sprintf("hamatrix-%d", runID)
	in := startInstances(t, 3, name, "routes: { default: target }\n")
	boot := strings.Join(in.addrs, ",")
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			topic := spreadTopic("hamatrix-"+strings.ReplaceAll(d.name, "-", ""), partitions, 3)
			createTopic(t, env.target, topic, partitions)
			v, err := hatest.Agreed(ctx, in.addrs, 3, topic, "g-"+topic)
			if err != nil {
				t.Fatal(err)
			}
			led := map[int]bool{}
			for _, l := range v.Leaders {
				led[v.Instance(in.addrs, l)] = true
			}
			if len(v.Leaders) != partitions || len(led) != 3 || led[-1] {
				t.Fatalf("%s: partition leaders %v over the instances %v: want one partition on each", topic, v.Leaders, v.Brokers)
			}
			start := time.Now()
			perPartition := map[int32]int{}
			for _, a := range matrixRun(t, d, boot, topic, 100, 20) {
				perPartition[a.Partition]++
			}
			// Consumers read every partition, so every instance; where a
			// producer's records went is its partitioner's choice (Java's
			// sticky one may fill one partition), so it is logged only.
			t.Logf("%s through %s: %s; records acknowledged per partition %v", d.name, boot, time.Since(start).Round(time.Millisecond), perPartition)
		})
	}
}
