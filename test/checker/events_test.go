package checker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseNative(t *testing.T) {
	in := `{"ev":"ack","client":"sarama","topic":"t","partition":0,"offset":17,"key":"k-17","value":"sarama-0-17"}

{"ev":"consume","client":"sarama","consumer":"c1","topic":"t","partition":0,"offset":17,"key":"k-17","value":"sarama-0-17"}
{"ev":"rebalance","client":"sarama","consumer":"c1","msg":"assigned t[0]"}
{"ev":"consume","client":"sarama","consumer":"c1","topic":"t","partition":2,"offset":3,"key":null,"value":"caf\u00e9 \"q\""}
{"ev":"error","client":"sarama","msg":"boom"}
{"ev":"something-new"}
`
	l, err := Parse(strings.NewReader(in), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Acks) != 1 || len(l.Consumed) != 2 || len(l.Errors) != 1 || l.Rebalances != 1 || l.Other != 1 || len(l.Malformed) != 0 {
		t.Fatalf("parsed %+v", l)
	}
	a := l.Acks[0]
	if a != (Ack{Client: "sarama", Topic: "t", Partition: 0, Offset: 17, Key: "k-17", Value: "sarama-0-17"}) {
		t.Fatalf("ack %+v", a)
	}
	c := l.Consumed[1]
	if c.Partition != 2 || c.Offset != 3 || c.Key != "" || c.Value != `café "q"` || c.Consumer != "c1" {
		t.Fatalf("consumed %+v", c)
	}
	if l.Consumed[0].Epoch != 0 || l.Consumed[1].Epoch != 1 {
		t.Fatalf("epochs %d %d", l.Consumed[0].Epoch, l.Consumed[1].Epoch)
	}
	if l.Errors[0].Msg != "boom" {
		t.Fatalf("error %+v", l.Errors[0])
	}
}

func TestParseVerifiableProducer(t *testing.T) {
	in := `{"timestamp":1700000000000,"name":"startup_complete"}
{"timestamp":1700000000001,"name":"producer_send_success","key":null,"value":"7.0","topic":"t","partition":1,"offset":42}
{"timestamp":1700000000002,"name":"producer_send_error","exception":"class org.apache.kafka.common.errors.TimeoutException","message":"Expiring 1 record(s)","topic":"t","key":null,"value":"7.1"}
{"timestamp":1700000000003,"name":"shutdown_complete"}
{"timestamp":1700000000004,"name":"tool_data","sent":2,"acked":1,"target_throughput":-1,"avg_throughput":1.0}
`
	l, err := Parse(strings.NewReader(in), ParseOptions{Client: "java"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Acks) != 1 || len(l.Errors) != 1 || l.Other != 3 {
		t.Fatalf("parsed %+v", l)
	}
	if l.Acks[0] != (Ack{Client: "java", Topic: "t", Partition: 1, Offset: 42, Value: "7.0"}) {
		t.Fatalf("ack %+v", l.Acks[0])
	}
	if !strings.Contains(l.Errors[0].Msg, "TimeoutException: Expiring") {
		t.Fatalf("error %+v", l.Errors[0])
	}
}

func TestParseVerifiableConsumer(t *testing.T) {
	in := `{"timestamp":1,"name":"startup_complete"}
{"timestamp":2,"name":"partitions_assigned","partitions":[{"topic":"t","partition":0}]}
{"timestamp":3,"name":"record_data","key":"k","value":"7.0","topic":"t","partition":0,"offset":42}
{"timestamp":4,"name":"records_consumed","count":1,"partitions":[{"topic":"t","partition":0,"count":1,"minOffset":42,"maxOffset":42}]}
{"timestamp":5,"name":"offsets_committed","offsets":[{"topic":"t","partition":0,"offset":43}],"success":true}
{"timestamp":6,"name":"partitions_revoked","partitions":[{"topic":"t","partition":0}]}
{"timestamp":7,"name":"partitions_assigned","partitions":[{"topic":"t","partition":0}]}
{"timestamp":8,"name":"record_data","key":null,"value":"7.1","topic":"t","partition":0,"offset":43}
`
	l, err := Parse(strings.NewReader(in), ParseOptions{Client: "java", Consumer: "vc1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Consumed) != 2 || l.Rebalances != 2 {
		t.Fatalf("parsed %+v", l)
	}
	want := Consumed{Client: "java", Consumer: "vc1", Topic: "t", Partition: 0, Offset: 42, Key: "k", Value: "7.0", Epoch: 1}
	if l.Consumed[0] != want {
		t.Fatalf("consumed %+v want %+v", l.Consumed[0], want)
	}
	if l.Consumed[1].Epoch != 2 || l.Consumed[1].Key != "" {
		t.Fatalf("consumed %+v", l.Consumed[1])
	}
}

func TestParseMalformedAndMissingFields(t *testing.T) {
	l, err := Parse(strings.NewReader("SLF4J: whatever\n{not json\n"), ParseOptions{Source: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Malformed) != 2 || !strings.HasPrefix(l.Malformed[0], "x:1: SLF4J") {
		t.Fatalf("malformed %q", l.Malformed)
	}
	_, err = Parse(strings.NewReader(`{"ev":"ack","topic":"t","partition":0}`), ParseOptions{})
	if err == nil || !strings.Contains(err.Error(), "without topic/partition/offset") {
		t.Fatalf("missing offset accepted: %v", err)
	}
	_, err = Parse(strings.NewReader(`{"ev":"consume","partition":0,"offset":1}`), ParseOptions{})
	if err == nil {
		t.Fatal("missing topic accepted")
	}
}

func TestParseNumericValues(t *testing.T) {
	l, err := Parse(strings.NewReader(`{"name":"producer_send_success","key":1,"value":2,"topic":"t","partition":0,"offset":0}`), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Acks[0].Key != "1" || l.Acks[0].Value != "2" {
		t.Fatalf("%+v", l.Acks[0])
	}
}

func TestParseFileDefaultsAndMerge(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vc-1.jsonl")
	if err := os.WriteFile(p, []byte(`{"name":"record_data","key":null,"value":"1","topic":"t","partition":0,"offset":0}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := ParseFile(p, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Consumed[0].Client != "vc-1" || l.Consumed[0].Consumer != "vc-1" {
		t.Fatalf("%+v", l.Consumed[0])
	}
	l2, err := ParseFile(p, ParseOptions{Client: "java", Consumer: "x"})
	if err != nil {
		t.Fatal(err)
	}
	l.Merge(l2)
	if len(l.Consumed) != 2 || l.Consumed[1].Consumer != "x" {
		t.Fatalf("%+v", l.Consumed)
	}
	if _, err := ParseFile(filepath.Join(dir, "missing"), ParseOptions{}); err == nil {
		t.Fatal("missing file accepted")
	}
}
