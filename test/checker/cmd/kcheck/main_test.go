package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, dir, name string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func ack(i int) string {
	return fmt.Sprintf(`{"ev":"ack","client":"x","topic":"t","partition":0,"offset":%d,"key":"k-%d","value":"x-0-%d"}`, i, i, i)
}

func cons(i int) string {
	return fmt.Sprintf(`{"ev":"consume","client":"x","consumer":"c","topic":"t","partition":0,"offset":%d,"key":"k-%d","value":"x-0-%d"}`, i, i, i)
}

func kcheck(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestClean(t *testing.T) {
	d := t.TempDir()
	a1 := write(t, d, "a1", ack(0), ack(1))
	a2 := write(t, d, "a2", ack(2))
	c1 := write(t, d, "c1", cons(0), cons(1))
	c2 := write(t, d, "c2", cons(2))
	code, out, errOut := kcheck("-acks", a1, a2, "-consumed", c1, c2)
	if code != 0 || out != "acked 3, consumed 3, lost 0, duplicated 0, gaps 0, out of order 0, inconsistent 0, mismatched 0: OK\n" {
		t.Fatalf("code %d out %q err %q", code, out, errOut)
	}
	// Repeated options and --long spelling work too.
	if code, out, _ := kcheck("--acks", a1, "--consumed", c1, "--acks", a2, "--consumed", c2, "-v"); code != 0 || !strings.Contains(out, "t[0]") {
		t.Fatalf("code %d out %q", code, out)
	}
}

func TestAnomalyExitsOne(t *testing.T) {
	d := t.TempDir()
	a := write(t, d, "a", ack(0), ack(1), ack(2))
	c := write(t, d, "c", cons(0), cons(2))
	code, out, _ := kcheck("-acks", a, "-consumed", c)
	if code != 1 || !strings.Contains(out, "gaps 1") || !strings.Contains(out, "FAIL") || !strings.Contains(out, "! gap") {
		t.Fatalf("code %d out %q", code, out)
	}
	// A consumer that read only a prefix is fine without -expect-all.
	c = write(t, d, "c", cons(0), cons(1))
	if code, out, _ := kcheck("-acks", a, "-consumed", c); code != 1 || !strings.Contains(out, "lost 1") {
		t.Fatalf("code %d out %q", code, out)
	}
	if code, out, _ := kcheck("-expect-all=false", "-acks", a, "-consumed", c); code != 0 {
		t.Fatalf("code %d out %q", code, out)
	}
	// Redelivery fails unless allowed.
	c = write(t, d, "c", cons(0), cons(1), cons(2))
	c2 := write(t, d, "c2", cons(2))
	if code, _, _ := kcheck("-acks", a, "-consumed", c, c2); code != 1 {
		t.Fatalf("redelivery: code %d", code)
	}
	if code, _, _ := kcheck("-allow-redelivery", "-acks", a, "-consumed", c, c2); code != 0 {
		t.Fatalf("allowed redelivery: code %d", code)
	}
	// Only new records expected.
	a3 := write(t, d, "a3", ack(2))
	if code, _, _ := kcheck("-require-acked", "-acks", a3, "-consumed", c); code != 1 {
		t.Fatalf("require-acked: code %d", code)
	}
}

func TestJavaFiles(t *testing.T) {
	d := t.TempDir()
	p := write(t, d, "vp.jsonl",
		`{"timestamp":1,"name":"startup_complete"}`,
		`{"timestamp":2,"name":"producer_send_success","key":null,"value":"1.0","topic":"t","partition":0,"offset":0}`,
		`{"timestamp":3,"name":"producer_send_success","key":null,"value":"1.1","topic":"t","partition":0,"offset":1}`)
	c := write(t, d, "vc.jsonl",
		`{"timestamp":1,"name":"partitions_assigned","partitions":[{"topic":"t","partition":0}]}`,
		`{"timestamp":2,"name":"record_data","key":null,"value":"1.0","topic":"t","partition":0,"offset":0}`,
		`{"timestamp":3,"name":"record_data","key":null,"value":"1.1","topic":"t","partition":0,"offset":1}`)
	if code, out, errOut := kcheck("-acks", p, "-consumed", c); code != 0 {
		t.Fatalf("code %d out %q err %q", code, out, errOut)
	}
}

func TestJSONOutput(t *testing.T) {
	d := t.TempDir()
	a := write(t, d, "a", ack(0))
	code, out, _ := kcheck("-json", "-acks", a, "-consumed", a)
	if code != 1 || !strings.Contains(out, `"ok": false`) || !strings.Contains(out, `"lost": 1`) {
		t.Fatalf("code %d out %s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	d := t.TempDir()
	a := write(t, d, "a", ack(0))
	for _, args := range [][]string{
		{},
		{a},
		{"-acks", a, "-bogus"},
		{"-acks", filepath.Join(d, "missing")},
		{"-expect-all=maybe", "-acks", a},
		{"-acks", write(t, d, "bad", `{"ev":"ack","topic":"t"}`)},
	} {
		if code, _, _ := kcheck(args...); code != 2 {
			t.Errorf("%q: code %d, want 2", args, code)
		}
	}
}

func TestEmptyAndMalformed(t *testing.T) {
	d := t.TempDir()
	e := write(t, d, "e", "this is a log line")
	code, _, errOut := kcheck("-acks", e, "-consumed", e)
	if code != 1 || !strings.Contains(errOut, "nothing to check") || !strings.Contains(errOut, "not a JSON event") {
		t.Fatalf("code %d err %q", code, errOut)
	}
	if code, _, _ := kcheck("-allow-empty", "-acks", e, "-consumed", e); code != 0 {
		t.Fatalf("allow-empty: code %d", code)
	}
}
