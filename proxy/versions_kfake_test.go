package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// A Kafka 2.8 source has no DescribeTransactions (KIP-664 came in 3.0), so
// kproxy cannot ask its coordinator whether an overdue transaction is over.
// It asks the partition leaders instead (DescribeProducers, which 2.8 has):
// an abandoned transaction whose records the coordinator aborted no longer
// blocks a cutover, and the client's late commit is refused upstream.
func TestAbandonedTransactionOnAKafka28Source(t *testing.T) {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("src"), kfake.SeedTopics(1, "t"), kfake.MaxVersions(kversion.V2_8_0()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("tgt"), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tgt.Close)
	srv, err := New(Options{Listen: "127.0.0.1:0", NodeID: 9, StateDir: t.TempDir(),
		Clusters: map[string][]string{Source: src.ListenAddrs(), Target: tgt.ListenAddrs()}, Router: txnRoutes(t, Source)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if _, has := srv.advertised()[kmsg.DescribeTransactions.Int16()]; has {
		t.Fatal("DescribeTransactions advertised over a 2.8 source")
	}

	// A transaction with a record in it, then silence.
	cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.TransactionalID("txn-abandoned-28"),
		kgo.TransactionTimeout(time.Second), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("never committed")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	pid, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}

	srv.HoldProduce("t")
	defer srv.ReleaseProduce("t")
	if err := srv.WaitTxnIdle(ctx, "t"); err != nil {
		t.Fatalf("an abandoned transaction blocked the cutover: %v", err)
	}
	ereq := kmsg.NewPtrEndTxnRequest()
	ereq.TransactionalID, ereq.ProducerID, ereq.ProducerEpoch, ereq.Commit = "txn-abandoned-28", pid, epoch, true
	eresp, err := ereq.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if eresp.ErrorCode == 0 {
		t.Fatal("a commit of an aborted transaction succeeded")
	}
}
