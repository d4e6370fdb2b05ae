package integration

// Bypass detection on real Kafka: an application writing to the source
// cluster directly, around kproxy, is reported with its topic, while a
// client producing through kproxy (idempotent, and in transactions) is not.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/control"
)

func bypassStatus(t *testing.T, admin string) control.BypassStatus {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st control.StatusDoc
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Bypass
}

func TestBypassDetectsADirectProducerToTheSource(t *testing.T) {
	dir := t.TempDir()
	exe := buildKproxy(t, dir)
	direct, clean, txn := replTopic("bypass-direct"), replTopic("bypass-clean"), replTopic("bypass-txn")
	for _, topic := range []string{direct, clean, txn} {
		replCreateTopic(t, topic, 3, nil)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "kproxy.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf("listen: %s\nadmin: %s\nclusters:\n  source: { bootstrap: [%s] }\n  target: { bootstrap: [%s] }\nroutes:\n  default: source\nmonitor: { bypass_interval: 500ms }\n",
		listen, admin, env.source, env.target))
	_, logs := runKproxy(t, exe, cfgPath)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prod := replClient(t, listen)
	tx := replClient(t, listen, kgo.TransactionalID(txn))
	for _, topic := range []string{direct, clean, txn} {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("first")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitBypassChecks(t, admin, 3)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	wg.Add(2)
	go func() { // through kproxy, to both the direct writer's topic and its own
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := prod.ProduceSync(ctx, &kgo.Record{Topic: clean, Value: fmt.Append(nil, i)}, &kgo.Record{Topic: direct, Value: fmt.Append(nil, i)}).FirstErr(); err != nil {
				fail(err)
				return
			}
		}
	}()
	go func() { // transactions through kproxy, every third aborted
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := tx.BeginTransaction(); err != nil {
				fail(err)
				return
			}
			for j := range 3 {
				tx.Produce(ctx, &kgo.Record{Topic: txn, Value: fmt.Append(nil, i, j)}, nil)
			}
			if err := tx.Flush(ctx); err != nil {
				fail(err)
				return
			}
			if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(i%3 != 2)); err != nil {
				fail(err)
				return
			}
		}
	}()
	time.Sleep(time.Second)
	// An application never repointed to kproxy.
	app := replClient(t, env.source, kgo.DefaultProduceTopic(direct))
	for i := range 100 {
		app.Produce(ctx, &kgo.Record{Value: fmt.Append(nil, "around-", i)}, nil)
	}
	if err := app.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the direct writer's topic to be reported", func() bool {
		for _, bt := range bypassStatus(t, admin).Topics {
			if bt.Topic == direct {
				return true
			}
		}
		return false
	})
	time.Sleep(2 * time.Second) // more windows with kproxy's clients writing
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Fatalf("producing through kproxy: %v", err)
	}
	waitBypassChecks(t, admin, 3)

	st := bypassStatus(t, admin)
	var got []string
	var records int64
	for _, bt := range st.Topics {
		got = append(got, fmt.Sprintf("%s=%d", bt.Topic, bt.Records))
		if bt.Topic == direct {
			records = bt.Records
		}
	}
	t.Logf("bypass: %v (error %q)", got, st.Error)
	if len(st.Topics) != 1 || records < 1 || records > 100 {
		t.Fatalf("bypass reports %v; want only %s, with 1 to 100 records (a lower bound of the 100 written around kproxy)", got, direct)
	}
	if !strings.Contains(logs.String(), "records appeared on a source topic that kproxy did not write") || !strings.Contains(logs.String(), direct) {
		t.Errorf("no warning naming %s in the log", direct)
	}
	out, err := exec.Command(exe, "status", "--admin", admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "BYPASSED") || !strings.Contains(string(out), direct) {
		t.Errorf("kproxy status does not list %s as bypassed (%v):\n%s", direct, err, out)
	}
	if have := exportedFamilies(t, admin); !have["kproxy_bypass_records_total"] {
		t.Error("kproxy_bypass_records_total is not exported")
	}
}

// waitBypassChecks waits until n more bypass checks have completed.
func waitBypassChecks(t *testing.T, admin string, n int) {
	t.Helper()
	for range n {
		last := bypassStatus(t, admin).Checked
		waitFor(t, "a bypass check", func() bool { return bypassStatus(t, admin).Checked.After(last) })
	}
}
