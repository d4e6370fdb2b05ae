// Package checker verifies produce/consume histories recorded by the kproxy
// client drivers (test/clients) and by Kafka's VerifiableProducer and
// VerifiableConsumer tools.
//
// Every driver prints one JSON object per line on stdout:
//
//	{"ev":"ack","client":"sarama","topic":"t","partition":0,"offset":17,"key":"k-17","value":"sarama-0-17"}
//	{"ev":"consume","client":"sarama","consumer":"c1","topic":"t","partition":0,"offset":17,"key":"k-17","value":"sarama-0-17"}
//	{"ev":"error","client":"sarama","msg":"..."}
//	{"ev":"rebalance","client":"sarama","consumer":"c1","msg":"assigned t[0 1 2]"}
//
// Parse reads such a stream (and, transparently, the JSON emitted by
// VerifiableProducer and VerifiableConsumer --verbose) and Check looks for
// lost, duplicated, skipped, reordered and inconsistent records.
package checker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Event kinds of the common driver format.
const (
	EvAck       = "ack"
	EvConsume   = "consume"
	EvError     = "error"
	EvRebalance = "rebalance"
)

// Ack is a record the broker (or proxy) acknowledged, with the offset it
// returned for it.
type Ack struct {
	Client    string `json:"client,omitempty"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       string `json:"key"`
	Value     string `json:"value"`
}

// Consumed is a record a consumer received, in the order it received it.
type Consumed struct {
	Client    string `json:"client,omitempty"`
	Consumer  string `json:"consumer,omitempty"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       string `json:"key"`
	Value     string `json:"value"`
	// Epoch counts the rebalance events the consumer reported before this
	// record. Offsets must increase strictly within one consumer and epoch;
	// a consumer may legitimately rewind to its committed offset after a
	// rebalance (that shows up as a redelivery instead).
	Epoch int `json:"-"`
	// Stream names the stream (file) the record was parsed from. Ordering is
	// checked per stream: two runs of a driver with the same consumer name
	// are two consumers.
	Stream string `json:"-"`
}

// Event is a non-record event (error, rebalance or anything unrecognised).
type Event struct {
	Ev       string `json:"ev"`
	Client   string `json:"client,omitempty"`
	Consumer string `json:"consumer,omitempty"`
	Msg      string `json:"msg,omitempty"`
}

// Log is everything parsed from one or more event streams.
type Log struct {
	Acks     []Ack
	Consumed []Consumed
	Errors   []Event
	// Rebalances counts rebalance events (and VerifiableConsumer
	// partitions_assigned events).
	Rebalances int
	// Other counts well-formed lines that carry no record (startup events,
	// VerifiableConsumer summaries, ...).
	Other int
	// Malformed lists lines that are not JSON objects ("file:line: text").
	Malformed []string
}

// ParseOptions fill in what a stream may leave out.
type ParseOptions struct {
	// Client is used for events without a client (Java tools, kcat).
	Client string
	// Consumer is used for consume events without a consumer name.
	Consumer string
	// Source names the stream in Malformed entries.
	Source string
}

// raw is the union of the fields of every format Parse understands.
type raw struct {
	// common driver format
	Ev       string `json:"ev"`
	Client   string `json:"client"`
	Consumer string `json:"consumer"`
	Msg      string `json:"msg"`
	// VerifiableProducer / VerifiableConsumer
	Name      string `json:"name"`
	Exception string `json:"exception"`
	Message   string `json:"message"`
	// shared
	Topic     string           `json:"topic"`
	Partition *int32           `json:"partition"`
	Offset    *int64           `json:"offset"`
	Key       *json.RawMessage `json:"key"`
	Value     *json.RawMessage `json:"value"`
}

// str decodes a JSON string, null or number (VerifiableProducer may print
// numbers depending on version) into a Go string; null becomes "".
func str(m *json.RawMessage) (string, error) {
	if m == nil {
		return "", nil
	}
	b := bytes.TrimSpace(*m)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return "", nil
	}
	if b[0] == '"' {
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	}
	return string(b), nil
}

// Parse reads a JSON-lines stream. Blank lines are ignored; lines that are not
// JSON objects are recorded in Log.Malformed rather than failing the parse, so
// that a stray log line on stdout does not hide the history. It returns an
// error only if reading fails or a record event lacks its coordinates.
func Parse(r io.Reader, po ParseOptions) (*Log, error) {
	l := &Log{}
	if err := l.parse(r, po); err != nil {
		return nil, err
	}
	return l, nil
}

// ParseFile parses a file; "-" is standard input. Client and consumer default
// to the file's base name without extension when po leaves them empty.
func ParseFile(path string, po ParseOptions) (*Log, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
		if po.Source == "" {
			po.Source = "stdin"
		}
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
		base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		if po.Client == "" {
			po.Client = base
		}
		if po.Consumer == "" {
			po.Consumer = base
		}
		if po.Source == "" {
			po.Source = path
		}
	}
	return Parse(r, po)
}

// Merge appends another log's contents.
func (l *Log) Merge(o *Log) {
	l.Acks = append(l.Acks, o.Acks...)
	l.Consumed = append(l.Consumed, o.Consumed...)
	l.Errors = append(l.Errors, o.Errors...)
	l.Rebalances += o.Rebalances
	l.Other += o.Other
	l.Malformed = append(l.Malformed, o.Malformed...)
}

func (l *Log) parse(r io.Reader, po ParseOptions) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	epochs := map[string]int{}
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		where := fmt.Sprintf("%s:%d", po.Source, lineNo)
		var e raw
		if line[0] != '{' || json.Unmarshal(line, &e) != nil {
			text := string(line)
			if len(text) > 200 {
				text = text[:200] + "..."
			}
			l.Malformed = append(l.Malformed, where+": "+text)
			continue
		}
		if e.Client == "" {
			e.Client = po.Client
		}
		if e.Consumer == "" {
			e.Consumer = po.Consumer
		}
		kind := e.Ev
		switch e.Name {
		case "producer_send_success":
			kind = EvAck
		case "record_data":
			kind = EvConsume
		case "producer_send_error":
			kind = EvError
			e.Msg = strings.TrimSpace(e.Exception + ": " + e.Message)
		case "partitions_assigned":
			kind = EvRebalance
		}
		switch kind {
		case EvAck, EvConsume:
			if e.Topic == "" || e.Partition == nil || e.Offset == nil {
				return fmt.Errorf("%s: %s event without topic/partition/offset: %s", where, kind, line)
			}
			key, err := str(e.Key)
			if err != nil {
				return fmt.Errorf("%s: bad key: %v", where, err)
			}
			val, err := str(e.Value)
			if err != nil {
				return fmt.Errorf("%s: bad value: %v", where, err)
			}
			if kind == EvAck {
				l.Acks = append(l.Acks, Ack{Client: e.Client, Topic: e.Topic, Partition: *e.Partition,
					Offset: *e.Offset, Key: key, Value: val})
			} else {
				l.Consumed = append(l.Consumed, Consumed{Client: e.Client, Consumer: e.Consumer,
					Topic: e.Topic, Partition: *e.Partition, Offset: *e.Offset, Key: key, Value: val,
					Epoch: epochs[e.Client+"\x00"+e.Consumer], Stream: po.Source})
			}
		case EvError:
			l.Errors = append(l.Errors, Event{Ev: EvError, Client: e.Client, Consumer: e.Consumer, Msg: e.Msg})
		case EvRebalance:
			l.Rebalances++
			epochs[e.Client+"\x00"+e.Consumer]++
		default:
			l.Other++
		}
	}
	return sc.Err()
}
