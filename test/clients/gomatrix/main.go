// Command gomatrix drives three Go Kafka clients (IBM/sarama,
// segmentio/kafka-go, twmb/franz-go) through the same produce and consume
// scenarios and prints the kproxy checker's JSON-lines events on stdout:
//
//	gomatrix produce -client sarama -bootstrap 127.0.0.1:9092 -topic t -count 500 -run 0
//	gomatrix consume -client sarama -bootstrap 127.0.0.1:9092 -topic t -group g -count 500
//
// The mode may also be given as -mode produce|consume. Logs go to stderr.
//
//	gomatrix create -bootstrap 127.0.0.1:9092 -topic t -partitions 3
//
// creates a topic (with franz-go's kadm) for the scripts that run the matrix.
//
// produce: sends -count records (key k-<i>, value <client>-<run>-<i>, i from
// -start) with acks=all and prints an "ack" event per acknowledged record with
// the partition and offset the broker returned. Exits 1 if any send failed.
// franz takes -topic a,b,...: record i goes to topic number i mod n, consume
// subscribes to every listed topic.
//
// consume: joins group -group, subscribes to -topic and prints a "consume"
// event per record until -count records were seen (then keeps reading for
// -linger) or -timeout passed, commits the offsets of the printed records and
// leaves the group. Exits 0 either way (the checker judges completeness),
// 1 on client errors.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type config struct {
	client        string
	mode          string
	bootstrap     []string
	topic         string
	group         string
	clientID      string
	consumer      string
	run           string
	count         int
	start         int
	timeout       time.Duration
	linger        time.Duration
	idempotent    bool
	transactional string
	txnSize       int
	kafkaVersion  string
	verbose       bool
	secure        secureConfig
	// create mode
	partitions        int32
	replicationFactor int16
}

// seconds parses "30", "1.5" (seconds) or a Go duration ("30s", "2m").
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want seconds or a duration: %q", v)
	}
	*s.d = d
	return nil
}

func parseFlags(args []string) (*config, error) {
	c := &config{timeout: 60 * time.Second}
	fs := flag.NewFlagSet("gomatrix", flag.ContinueOnError)
	var bootstrap string
	fs.StringVar(&c.client, "client", "", "sarama | kafkago | franz")
	fs.StringVar(&c.mode, "mode", "", "produce | consume (or give it as the first argument)")
	fs.StringVar(&bootstrap, "bootstrap", "127.0.0.1:9092", "comma-separated bootstrap servers")
	fs.StringVar(&c.topic, "topic", "", "topic; franz and create also take a comma-separated list (produce spreads records over the topics round-robin, consume subscribes to all)")
	fs.StringVar(&c.group, "group", "", "consumer group (consume)")
	fs.StringVar(&c.clientID, "client-id", "", "Kafka client.id (default gomatrix-<client>)")
	fs.StringVar(&c.consumer, "consumer", "", "consumer name printed in consume events (default <client-id>)")
	fs.StringVar(&c.run, "run", "0", "run id used in produced values <client>-<run>-<i>")
	fs.IntVar(&c.count, "count", 100, "records to produce / to consume")
	fs.IntVar(&c.start, "start", 0, "first record index i (produce)")
	fs.Var(seconds{&c.timeout}, "timeout", "overall deadline, seconds or duration")
	fs.Var(seconds{&c.linger}, "linger", "consume: keep reading this long after -count records (catches extras)")
	fs.BoolVar(&c.idempotent, "idempotent", false, "idempotent producer (sarama, franz; kafka-go cannot)")
	fs.StringVar(&c.transactional, "transactional", "", "transactional.id: produce inside transactions (sarama, franz)")
	fs.IntVar(&c.txnSize, "txn-size", 0, "records per transaction (default: all in one)")
	fs.StringVar(&c.kafkaVersion, "kafka-version", "", "sarama: protocol version to assume, e.g. 3.9.0 (default: sarama's default)")
	fs.BoolVar(&c.verbose, "v", false, "client debug logging to stderr (where supported)")
	caFile := fs.String("tls-ca", "", "connect with TLS, trusting this CA bundle (PEM) (sarama, franz)")
	mech := fs.String("sasl", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (sarama, franz)")
	saslUser := fs.String("sasl-user", "", "SASL user")
	passFile := fs.String("sasl-password-file", "", "file holding the SASL password (a file, not a flag: flags show in ps)")
	partitions := fs.Int("partitions", 3, "create: partition count")
	rf := fs.Int("replication-factor", 1, "create: replication factor")

	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.mode, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.partitions, c.replicationFactor = int32(*partitions), int16(*rf)
	var err error
	if c.secure, err = loadSecure(*caFile, *mech, *saslUser, *passFile); err != nil {
		return nil, err
	}
	if c.mode == "create" && c.client == "" {
		c.client = "franz"
	}
	for _, b := range strings.Split(bootstrap, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.bootstrap = append(c.bootstrap, b)
		}
	}
	switch {
	case c.client != "sarama" && c.client != "kafkago" && c.client != "franz":
		return nil, fmt.Errorf("-client must be sarama, kafkago or franz")
	case c.mode != "produce" && c.mode != "consume" && c.mode != "create":
		return nil, fmt.Errorf("mode must be produce, consume or create")
	case c.mode == "create" && c.client != "franz":
		return nil, fmt.Errorf("create is done with franz-go's kadm (-client franz)")
	case len(c.topics()) == 0:
		return nil, fmt.Errorf("-topic is required")
	case len(c.bootstrap) == 0:
		return nil, fmt.Errorf("-bootstrap is required")
	case c.mode == "consume" && c.group == "":
		return nil, fmt.Errorf("-group is required to consume")
	case c.count < 0:
		return nil, fmt.Errorf("-count must be >= 0")
	}
	if (c.secure.tls != nil || c.secure.mechanism != "") && c.client == "kafkago" {
		return nil, fmt.Errorf("-tls-ca and -sasl are for sarama and franz")
	}
	if strings.Contains(c.topic, ",") && c.client != "franz" {
		return nil, fmt.Errorf("a comma-separated -topic list needs -client franz")
	}
	if c.clientID == "" {
		c.clientID = "gomatrix-" + c.client
	}
	if c.consumer == "" {
		c.consumer = c.clientID
	}
	if c.txnSize <= 0 {
		c.txnSize = c.count
	}
	if c.txnSize <= 0 {
		c.txnSize = 1
	}
	return c, nil
}

// emitter writes events to stdout, one JSON object per line, safely from many
// goroutines.
type emitter struct {
	mu     sync.Mutex
	w      *bufio.Writer
	client string
}

type event struct {
	Ev        string `json:"ev"`
	Client    string `json:"client"`
	Consumer  string `json:"consumer,omitempty"`
	Topic     string `json:"topic,omitempty"`
	Partition *int32 `json:"partition,omitempty"`
	Offset    *int64 `json:"offset,omitempty"`
	Key       string `json:"key,omitempty"`
	Value     string `json:"value,omitempty"`
	Msg       string `json:"msg,omitempty"`
}

func (e *emitter) emit(ev event) {
	ev.Client = e.client
	b, err := json.Marshal(ev)
	if err != nil {
		log.Fatalf("marshal: %v", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.Write(b)
	e.w.WriteByte('\n')
	if ev.Ev != "ack" && ev.Ev != "consume" {
		e.w.Flush()
	}
}

func (e *emitter) record(ev, consumer, topic string, partition int32, offset int64, key, value []byte) {
	e.emit(event{Ev: ev, Consumer: consumer, Topic: topic, Partition: &partition, Offset: &offset,
		Key: string(key), Value: string(value)})
}

func (e *emitter) ack(topic string, partition int32, offset int64, key, value []byte) {
	e.record("ack", "", topic, partition, offset, key, value)
}

func (e *emitter) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	log.Print("error: ", msg)
	e.emit(event{Ev: "error", Msg: msg})
}

func (e *emitter) rebalance(consumer, msg string) {
	log.Print("rebalance: ", msg)
	e.emit(event{Ev: "rebalance", Consumer: consumer, Msg: msg})
}

func (e *emitter) flush() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.Flush()
}

// rec is one record to produce.
type rec struct {
	idx   int
	key   []byte
	value []byte
}

// topics splits -topic on commas (franz and create take a list).
func (c *config) topics() []string {
	var out []string
	for _, t := range strings.Split(c.topic, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func (c *config) records() []rec {
	out := make([]rec, c.count)
	for i := range out {
		n := c.start + i
		out[i] = rec{idx: n, key: fmt.Appendf(nil, "k-%d", n), value: fmt.Appendf(nil, "%s-%s-%d", c.client, c.run, n)}
	}
	return out
}

// consumeState tracks how many records a consume run has printed and whether
// it should stop printing, shared by the three clients.
type consumeState struct {
	mu      sync.Mutex
	seen    int
	want    int
	lingerT time.Time
	linger  time.Duration
	done    chan struct{}
	once    sync.Once
}

func newConsumeState(c *config) *consumeState {
	s := &consumeState{want: c.count, linger: c.linger, done: make(chan struct{})}
	if s.want == 0 {
		s.finish()
	}
	return s
}

func (s *consumeState) finish() { s.once.Do(func() { close(s.done) }) }

// take reports whether one more record may be printed (and counts it).
// Records after -count are taken only while lingering.
func (s *consumeState) take() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen >= s.want {
		if s.linger <= 0 || (!s.lingerT.IsZero() && time.Now().After(s.lingerT)) {
			return false
		}
	}
	s.seen++
	if s.seen == s.want {
		if s.linger <= 0 {
			s.finish()
		} else {
			s.lingerT = time.Now().Add(s.linger)
			time.AfterFunc(s.linger, s.finish)
		}
	}
	return true
}

func (s *consumeState) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

var errSendFailed = errors.New("some records were not acknowledged")

func main() {
	log.SetOutput(os.Stderr)
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	c, err := parseFlags(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "gomatrix:", err)
		}
		os.Exit(2)
	}
	log.SetPrefix("gomatrix " + c.client + " " + c.mode + ": ")
	em := &emitter{w: bufio.NewWriterSize(os.Stdout, 1<<16), client: c.client}

	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		log.Print("interrupted")
		cancel()
	}()

	start := time.Now()
	switch c.client + " " + c.mode {
	case "sarama produce":
		err = saramaProduce(ctx, c, em)
	case "sarama consume":
		err = saramaConsume(ctx, c, em)
	case "kafkago produce":
		err = kafkagoProduce(ctx, c, em)
	case "kafkago consume":
		err = kafkagoConsume(ctx, c, em)
	case "franz produce":
		err = franzProduce(ctx, c, em)
	case "franz consume":
		err = franzConsume(ctx, c, em)
	case "franz create":
		err = createTopic(ctx, c)
	}
	if err != nil {
		em.errorf("%v", err)
	}
	em.flush()
	log.Printf("finished in %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		os.Exit(1)
	}
}
