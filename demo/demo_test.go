package demo

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The demo, shortened: traffic through kproxy with a flip to the target and
// a rollback under load, and a PASS verdict with every acked record consumed exactly once.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	res, err := Run(ctx, Options{
		Duration:     2 * time.Second,
		Rate:         1000,
		DrainTimeout: 15 * time.Second,
		Out:          &out,
		Log:          hclog.New(&hclog.LoggerOptions{Name: "kproxy", Level: hclog.Warn, Output: os.Stderr}),
	})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatalf("demo did not run: %v", err)
	}
	c := res.Report.Counts
	if !res.Pass() {
		t.Errorf("verdict FAIL: %s; produce errors %d, consume errors %d, problems %v",
			res.Report.String(), res.ProduceErrors, res.ConsumeErrors, res.Problems)
	}
	if c.Acked == 0 {
		t.Errorf("nothing acked")
	}
	if c.Consumed != c.Acked {
		t.Errorf("consumed %d, acked %d", c.Consumed, c.Acked)
	}
	if res.Reloads != 2 {
		t.Errorf("reloads applied under load = %d, want 2", res.Reloads)
	}
	if strings.Join(res.Flips, ",") != "target,source" {
		t.Errorf("flips %v, want to the target and back", res.Flips)
	}
	if res.RebalancesAfterFlip != 0 {
		t.Errorf("%d rebalances from the first flip on", res.RebalancesAfterFlip)
	}
	if !strings.Contains(out.String(), "verdict: PASS") {
		t.Errorf("output has no PASS verdict")
	}
}
