package replicator

// Source fetches are shared per leader. Every partition's copy loop used to
// send its own single-partition long poll; a broker serves one request per
// connection at a time and the client keeps one fetch connection per
// broker, so each poll waited behind every other partition's long poll
// (the cutover benchmark: holds of 0.5-4 s at 20 topics, mostly waiting to
// fetch the last records). Now a partition hands its fetch to its leader's
// fetcher, which sends the wants of every partition waiting at that moment
// as one multi-partition Fetch and answers each from the response, as a
// consumer does. A fetch answers once any partition has data (MinBytes 1);
// partitions without data get an empty answer and ask again.
//
// A drain (WaitCopied) must not wait out a long poll either: while any
// partition of a request has a waiter, the request polls briefly.

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchWant is one partition's fetch, waiting for its leader's next request.
type fetchWant struct {
	topic     string
	id        [16]byte
	partition int32
	offset    int64
	urgent    bool
	reply     chan fetchReply // buffered: the fetcher never blocks on it
}

type fetchReply struct {
	fp  *kmsg.FetchResponseTopicPartition
	err error
}

// leaderFetcher batches the fetches of the partitions one source broker
// leads.
type leaderFetcher struct {
	r      *Replicator
	leader int32

	mu      sync.Mutex // guards pending
	pending []*fetchWant
	kick    chan struct{} // a want arrived (buffered 1)
}

// fetcherFor returns (starting if needed) the fetcher of a source leader.
// It lives until the replicator stops.
func (r *Replicator) fetcherFor(leader int32) *leaderFetcher {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.fetchers[leader]; ok {
		return f
	}
	if r.fetchers == nil {
		r.fetchers = map[int32]*leaderFetcher{}
	}
	f := &leaderFetcher{r: r, leader: leader, kick: make(chan struct{}, 1)}
	r.fetchers[leader] = f
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f.loop(r.runCtx)
	}()
	return f
}

// fetchPolled fetches a partition's source records from offset through its
// leader's shared fetcher.
func (r *Replicator) fetchPolled(ctx context.Context, p *partition, l leaders, offset int64) (*kmsg.FetchResponseTopicPartition, error) {
	w := &fetchWant{topic: p.topic, id: l.srcID, partition: p.partition, offset: offset,
		urgent: p.waiters.Load() > 0, reply: make(chan fetchReply, 1)}
	f := r.fetcherFor(l.srcLeader)
	f.mu.Lock()
	f.pending = append(f.pending, w)
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err() // the answer, if any, is dropped
	case rep := <-w.reply:
		return rep.fp, rep.err
	}
}

func (f *leaderFetcher) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		}
		f.mu.Lock()
		wants := f.pending
		f.pending = nil
		f.mu.Unlock()
		if len(wants) == 0 {
			continue
		}
		f.fetch(ctx, wants)
	}
}

// fetch sends one request for wants and answers each of them.
func (f *leaderFetcher) fetch(ctx context.Context, wants []*fetchWant) {
	r := f.r
	wait := r.opts.FetchMaxWait
	byTopic := map[string]int{}
	var topics []kmsg.FetchRequestTopic
	for _, w := range wants {
		if w.urgent {
			wait = urgentFetchWait
		}
		i, ok := byTopic[w.topic]
		if !ok {
			i = len(topics)
			byTopic[w.topic] = i
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = w.topic, w.id
			topics = append(topics, rt)
		}
		topics[i].Partitions = append(topics[i].Partitions, r.fetchPartition(w.partition, w.offset))
	}
	req := r.newFetchRequest(1, wait) // read_committed
	req.Topics = topics
	answerAll := func(err error) {
		for _, w := range wants {
			w.reply <- fetchReply{err: err}
		}
	}
	kresp, err := r.src.Broker(int(f.leader)).Request(ctx, req)
	if err != nil {
		answerAll(fmt.Errorf("broker %d: fetch: %w", f.leader, err))
		return
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		answerAll(fmt.Errorf("broker %d: fetch: %w", f.leader, err))
		return
	}
	type key struct {
		topic     string
		partition int32
	}
	got := map[key]*kmsg.FetchResponseTopicPartition{}
	for i := range resp.Topics {
		rt := &resp.Topics[i]
		name := rt.Topic
		if name == "" { // v13+ names topics by id only
			for _, w := range wants {
				if w.id == rt.TopicID {
					name = w.topic
					break
				}
			}
		}
		for j := range rt.Partitions {
			got[key{name, rt.Partitions[j].Partition}] = &rt.Partitions[j]
		}
	}
	for _, w := range wants {
		if fp := got[key{w.topic, w.partition}]; fp != nil {
			w.reply <- fetchReply{fp: fp}
			continue
		}
		w.reply <- fetchReply{err: fmt.Errorf("broker %d: fetch answer has no %s/%d", f.leader, w.topic, w.partition)}
	}
}
