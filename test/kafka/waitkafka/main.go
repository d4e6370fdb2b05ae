// Command waitkafka waits until a Kafka broker answers a Metadata request and, with
// -produce, until one record round-trips through it (produce with acks=all, then
// fetch it back at the acknowledged offset). test/kafka/kafka.sh runs it after
// starting each real broker; it needs no JVM.
//
//	go run ./test/kafka/waitkafka -b 127.0.0.1:19092 -timeout 90s [-produce topic]
//
// Exit status 0 when ready, 1 when the deadline passed (the last error is printed).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/secure"
)

func main() {
	var (
		bootstrap = flag.String("b", "127.0.0.1:9092", "bootstrap broker host:port (comma-separated for several)")
		timeout   = flag.Duration("timeout", 90*time.Second, "give up after this long")
		topic     = flag.String("produce", "", "if set, produce one record to this topic (auto-created) and consume it back")
		name      = flag.String("name", "", "label for output lines (default: the bootstrap address)")
		quiet     = flag.Bool("q", false, "print nothing on success")
		versions  = flag.String("apiversions", "", "if set, write the broker's ApiVersions answer to this file, one \"key min max\" line per API")
		caFile    = flag.String("tls-ca", "", "connect with TLS, trusting this CA bundle (PEM)")
		mech      = flag.String("sasl", "", "SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); needs -sasl-user and -sasl-password-file")
		saslUser  = flag.String("sasl-user", "", "SASL user")
		passFile  = flag.String("sasl-password-file", "", "file holding the SASL password (never a flag: flags show in ps)")
	)
	flag.Parse()
	var err error
	if clientOpts, err = secureOpts(*caFile, *mech, *saslUser, *passFile); err != nil {
		fail(*bootstrap, "TLS/SASL options", err)
	}
	label := *name
	if label == "" {
		label = *bootstrap
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var info string
	info, err = waitMetadata(ctx, strings.Split(*bootstrap, ","))
	if err != nil {
		fail(label, "no Metadata answer", err)
	}
	if !*quiet {
		fmt.Printf("waitkafka: %s: %s\n", label, info)
	}
	if *versions != "" {
		var b strings.Builder
		for _, k := range lastApiKeys {
			fmt.Fprintf(&b, "%d %d %d\n", k.ApiKey, k.MinVersion, k.MaxVersion)
		}
		if err := os.WriteFile(*versions, []byte(b.String()), 0o644); err != nil {
			fail(label, "writing the ApiVersions file", err)
		}
	}
	if *topic == "" {
		return
	}
	// A broker that just started may not host the auto-created topic's
	// partition yet (UNKNOWN_TOPIC_OR_PARTITION outlasts kgo's few unknown-
	// topic retries on a loaded machine): try again until the deadline.
	var msg string
	for {
		msg, err = roundTrip(ctx, strings.Split(*bootstrap, ","), *topic)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			fail(label, "produce/consume round trip", err)
		}
		if !*quiet {
			fmt.Printf("waitkafka: %s: round trip not yet: %v\n", label, err)
		}
		time.Sleep(time.Second)
	}
	if !*quiet {
		fmt.Printf("waitkafka: %s: %s\n", label, msg)
	}
}

// clientOpts are the TLS and SASL options every client here uses (none for a
// plaintext listener).
var clientOpts []kgo.Opt

// secureOpts builds the TLS and SASL options the way kproxy builds its own
// upstream ones (secure.UpstreamFor): one code path for every client here.
func secureOpts(caFile, mech, user, passFile string) ([]kgo.Opt, error) {
	var cc config.ClusterConfig
	if caFile != "" {
		cc.TLS = &config.ClientTLS{CAFile: caFile}
	}
	if mech != "" {
		cc.SASL = &config.ClientSASL{Mechanism: mech, Username: user, PasswordFile: passFile}
	}
	u, err := secure.UpstreamFor(&cc)
	if err != nil {
		return nil, err
	}
	return u.KgoOpts(), nil
}

func fail(label, what string, err error) {
	fmt.Fprintf(os.Stderr, "waitkafka: %s: %s: %v\n", label, what, err)
	os.Exit(1)
}

// waitMetadata retries Metadata (and ApiVersions, for the feature levels) until both
// succeed and the cluster reports at least one broker and a controller.
func waitMetadata(ctx context.Context, seeds []string) (string, error) {
	var last error
	for {
		info, err := describe(ctx, seeds)
		if err == nil {
			return info, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", last
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func describe(ctx context.Context, seeds []string) (string, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.RequestRetries(0), kgo.DialTimeout(2 * time.Second)}, clientOpts...)...)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	meta := kmsg.NewPtrMetadataRequest()
	meta.Topics = []kmsg.MetadataRequestTopic{} // no topics, not nil (nil = all topics)
	r, err := meta.RequestWith(rctx, cl)
	if err != nil {
		return "", err
	}
	if len(r.Brokers) == 0 {
		return "", errors.New("metadata lists no brokers yet")
	}
	if r.ControllerID < 0 {
		return "", errors.New("metadata reports no controller yet")
	}
	var brokers []string
	for _, b := range r.Brokers {
		brokers = append(brokers, fmt.Sprintf("%d@%s:%d", b.NodeID, b.Host, b.Port))
	}
	clusterID := "?"
	if r.ClusterID != nil {
		clusterID = *r.ClusterID
	}

	av := kmsg.NewPtrApiVersionsRequest()
	av.ClientSoftwareName = "kproxy-waitkafka"
	av.ClientSoftwareVersion = "0"
	ar, err := av.RequestWith(rctx, cl)
	if err != nil {
		return "", err
	}
	if err := kerrOf(ar.ErrorCode); err != nil {
		return "", err
	}
	lastApiKeys = ar.ApiKeys
	var feats []string
	for _, f := range ar.FinalizedFeatures {
		feats = append(feats, fmt.Sprintf("%s=%d", f.Name, f.MaxVersionLevel))
	}
	sort.Strings(feats)
	return fmt.Sprintf("metadata ok: cluster %s, controller %d, brokers [%s], %d APIs, finalized features [%s]",
		clusterID, r.ControllerID, strings.Join(brokers, " "), len(ar.ApiKeys), strings.Join(feats, " ")), nil
}

// lastApiKeys is the ApiVersions answer of the last successful describe (-apiversions).
var lastApiKeys []kmsg.ApiVersionsResponseApiKey

func kerrOf(code int16) error {
	if code == 0 {
		return nil
	}
	return fmt.Errorf("error code %d", code)
}

// roundTrip produces one uniquely-valued record (acks=all, idempotent, topic
// auto-created) and fetches it back from the acknowledged offset.
func roundTrip(ctx context.Context, seeds []string, topic string) (string, error) {
	p, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic(topic)}, clientOpts...)...)
	if err != nil {
		return "", err
	}
	defer p.Close()
	value := fmt.Sprintf("kproxy-harness-%d", time.Now().UnixNano())
	res := p.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte(value)})
	rec, err := res.First()
	if err != nil {
		return "", fmt.Errorf("produce: %w", err)
	}

	c, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		topic: {rec.Partition: kgo.NewOffset().At(rec.Offset)},
	})}, clientOpts...)...)
	if err != nil {
		return "", err
	}
	defer c.Close()
	for {
		fs := c.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("consume: %w", err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return "", fmt.Errorf("consume: %w", ferr)
		}
		for _, r := range fs.Records() {
			if r.Offset != rec.Offset {
				continue
			}
			if string(r.Value) != value {
				return "", fmt.Errorf("consume: offset %d holds %q, produced %q", r.Offset, r.Value, value)
			}
			return fmt.Sprintf("round trip ok: %s[%d] offset %d", topic, rec.Partition, rec.Offset), nil
		}
	}
}
