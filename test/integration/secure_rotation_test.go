package integration

import (
	"context"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kproxy/kproxy/test/checker"
)

// disconnects counts the broker connections a franz-go client lost.
type disconnects struct{ n atomic.Int64 }

func (d *disconnects) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { d.n.Add(1) }

// kproxy's listener certificate and key are replaced on disk while a
// producer and a consumer group work over TLS (SCRAM-SHA-512 and
// SCRAM-SHA-256) through kproxy to the SASL_SSL clusters: no connection is
// dropped, no produce fails, the checker finds the consumer clean, and a
// new connection is served the new certificate (from the same CA, so the
// clients keep trusting it).
func TestCertRotationUnderLoad(t *testing.T) {
	k := newSecuredKproxy(t, securedOptions{extra: "log: { level: info }\n"})
	k.start(t)
	topic := fmt.Sprintf("secrot-%d", time.Now().UnixNano())
	createTopic(t, k.plain, topic, 3)
	before := servedCert(t, k.listen, k.ca.Pool)

	var lost disconnects
	prod := replClient(t, k.listen, append(k.franz(t, "SCRAM-SHA-512"), kgo.DefaultProduceTopic(topic), kgo.WithHooks(&lost))...)
	var assigned atomic.Bool
	cons := replClient(t, k.listen, append(k.franz(t, "SCRAM-SHA-256"), kgo.ConsumeTopics(topic), kgo.ConsumerGroup("g-"+topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond), kgo.WithHooks(&lost),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) { assigned.Store(true) }))...)
	var (
		cmu      sync.Mutex
		consumed []checker.Consumed
	)
	pollCtx, stopPoll := context.WithCancel(context.Background())
	defer stopPoll()
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for pollCtx.Err() == nil {
			fs := cons.PollFetches(pollCtx)
			cmu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				consumed = append(consumed, checker.Consumed{Client: "franz", Consumer: "franz", Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: string(r.Value)})
			})
			cmu.Unlock()
		}
	}()
	waitFor(t, "the consumer group to be assigned", assigned.Load)

	// 200 records/s for 6 s; the certificate changes after 2 s.
	const rate, load = 200, 6 * time.Second
	acks := &ackLog{}
	ctx, cancel := context.WithTimeout(context.Background(), load+60*time.Second)
	defer cancel()
	begin := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < int(load.Seconds())*rate; i++ {
			time.Sleep(time.Until(begin.Add(time.Duration(i) * time.Second / rate)))
			prod.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i % 17)), Value: []byte(fmt.Sprintf("rot-%06d", i))}, acks.promise)
		}
	}()
	time.Sleep(time.Until(begin.Add(2 * time.Second)))
	// The operator's rotation: a new pair from the same CA, each file
	// replaced whole (written beside it, renamed over it). kproxy may see
	// the new certificate before the new key: that pair does not load and
	// it keeps serving the old one until both are in place.
	cert, key := k.ca.Issue(t, pkix.Name{CommonName: "localhost", Organization: []string{"rotated"}})
	for f, b := range map[string][]byte{k.certFile: cert, k.keyFile: key} {
		if err := os.WriteFile(f+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{k.certFile, k.keyFile} {
		if err := os.Rename(f+".new", f); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a new connection to be served the new certificate", func() bool {
		return servedCert(t, k.listen, k.ca.Pool).SerialNumber.Cmp(before.SerialNumber) != 0
	})
	after := servedCert(t, k.listen, k.ca.Pool)
	if len(after.Subject.Organization) == 0 || after.Subject.Organization[0] != "rotated" {
		t.Errorf("served certificate %v is not the rotated one", after.Subject)
	}
	// A client that connects now authenticates and works.
	fresh := replClient(t, k.listen, k.franz(t, "PLAIN")...)
	if err := fresh.Ping(ctx); err != nil {
		t.Errorf("a new client after the rotation: %v", err)
	}

	<-done
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	all, errs := acks.snapshot()
	if errs > 0 {
		t.Errorf("%d produce errors across the rotation", errs)
	}
	waitFor(t, "the group to read every acked record", func() bool { cmu.Lock(); defer cmu.Unlock(); return len(consumed) >= len(all) })
	stopPoll()
	pwg.Wait()
	cmu.Lock()
	rep := checker.Check(all, consumed, checker.Options{ExpectAll: true, RequireAcked: true})
	cmu.Unlock()
	t.Logf("%d records across the rotation: %s", len(all), rep)
	if !rep.OK() {
		t.Errorf("%s\n%s", rep, rep.Details())
	}
	if n := lost.n.Load(); n != 0 {
		t.Errorf("the producer and consumer lost %d connections across the rotation", n)
	}
}
