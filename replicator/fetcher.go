package replicator

// Source fetches are shared per leader. Every partition's copy loop used to
// send its own single-partition long poll; a broker serves one request per
// connection at a time and the client keeps one fetch connection per
// broker, so each poll waited behind every other partition's long poll
// (the cutover benchmark: holds of 0.5-4 s at 20 topics, mostly waiting to
// fetch the last records). Now a partition hands its fetch to its leader's
// fetcher, which sends the wants of every waiting partition as one
// multi-partition Fetch and answers each from the response, as a consumer
// does.
//
// Idle cost is flat in the number of partitions (issue 15):
//
//   - A want without data is not answered: it stays parked in the fetcher
//     until its partition has records (or an error), so an idle partition
//     costs no goroutine wake-up and no request of its own.
//   - The fetcher keeps an incremental fetch session with the broker
//     (KIP-227): the first request names every parked partition, later ones
//     name only partitions whose fetch offset changed (and forget those
//     whose copy loop is busy with an answer). An idle source gets one
//     nearly empty request per IdleFetchWait, whatever the partition count.
//     A broker that lost the session (restart: FETCH_SESSION_ID_NOT_FOUND,
//     or INVALID_FETCH_SESSION_EPOCH) is answered with a full fetch that
//     opens a new one; the wants stay parked meanwhile.
//   - The poll is long (IdleFetchWait) only while every partition of the
//     leader is parked: new data for any of them ends it at once (the broker
//     watches every partition of the session). While some copy loop is busy
//     the poll is FetchMaxWait, so a loop that comes back with its next
//     offset does not wait out a long poll.
//   - An urgent partition (a cutover approaches or holds its topic:
//     Replicator.Urge) is fetched by the side loop alone, on
//     the side connection with a short poll (urgentFetchWait), and leaves
//     the session request until it is urgent no more: its last records
//     before a flip come back in a small answer of their own, not in one
//     carrying every other busy partition's records, and not after a
//     session request already pending.
//   - The broker still reads every partition of the session for each poll,
//     so an idle source's cost is partitions / IdleFetchWait: at 10,000
//     partitions and 500 ms that was 15% of the source broker's core. The
//     long poll is therefore long (10 s by default), and nothing that needs
//     the fetcher sooner waits for it. A long poll cannot be cut short (a
//     broker serves one request per connection at a time, and a second
//     session request would race the first's epoch), so a want parked
//     while one is pending, which the poll does not carry (a new
//     partition, a copy session started again), is fetched beside it
//     (sideLoop): sessionless fetches of only those wants on a second
//     connection, polling sideFetchWait (urgentFetchWait while a drain
//     waits on one), until the long poll ends and the next session request
//     carries them. A session request whose wants changed polls
//     sideFetchWait, not long: at start-up partitions park one after
//     another, and the session takes them in rather than leaving them to
//     the side loop; the poll goes long once a short one changed nothing. A drain on a partition the long poll carries needs
//     nothing: it waits for records below the source's end, and records
//     there end the poll at once. Stop closes both connections.
//
// A trickle of small batches is coalesced (issue 12 item 6, decision 016).
// With MinBytes 1 a flowing source answered each request as soon as one
// batch arrived: at 5,000 one-record Produce requests a second the copy
// made about one fetch answer, one copy-loop wake-up and one target
// Produce per source batch, and that CPU, on a machine the brokers share,
// slowed the very producers it copied. While the copy is flowing (the
// leader's last answer carried records) the session request asks
// copyMinBytes and waits at most CopyLinger (a few ms), so an answer
// carries what arrived meanwhile, several batches per partition; a backlog
// fills copyMinBytes at once and is not slowed. The copy's lag grows by at
// most CopyLinger. The idle long poll (nothing flowed last time: MinBytes
// 1, so the first new batch ends it at once) and the side loop's polls
// (urgent partitions, wants parked beside a long poll) do not linger: a
// cutover's last records are not held back.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchWant is one partition's fetch, parked in its leader's fetcher until
// it is answered.
type fetchWant struct {
	p      *partition
	id     [16]byte
	offset int64
	shift  int64           // the copy session's SourceShift, for hwm updates
	reply  chan fetchReply // buffered 1: the fetcher never blocks on it
}

type fetchReply struct {
	fp    *kmsg.FetchResponseTopicPartition
	frame *fetchFrame // fp lives in it; held for the receiver
	err   error
}

// leaderFetcher batches the fetches of the partitions one source broker
// leads and keeps the fetch session with that broker.
type leaderFetcher struct {
	r      *Replicator
	leader int32

	mu     sync.Mutex // guards the fields below
	parked map[topicPartition]*fetchWant
	busy   map[topicPartition]struct{} // answered; their loop has not asked again yet
	dirty  bool                        // parked or busy changed since the last request
	kick   chan struct{}               // something changed (buffered 1)
	// longPoll is the wants a pending long poll carries, nil while none
	// is pending: the side loop fetches the parked wants not in it.
	longPoll map[topicPartition]*fetchWant
	sideKick chan struct{} // the side loop's kick (buffered 1)

	// Owned by the loop goroutine: the session, and the wants of the last
	// request by partition and their topics by id. While nothing changes
	// (dirty false) the next request is the same empty incremental fetch,
	// sent without rebuilding them: an idle poll costs O(1), not O(partitions).
	sess      fetchSession
	inRequest map[topicPartition]*fetchWant
	ids       map[[16]byte]string
	conn      *fetchConn // nil until dialed, and after an error
	sideConn  *fetchConn // the side loop's; nil until dialed, and after an error
}

// defaultCopyLinger is Options.CopyLinger's default: long enough for a
// trickle of thousands of batches a second to come back tens to an answer,
// short beside the copy's other delays (a produce round trip, the map).
const defaultCopyLinger = 5 * time.Millisecond

// copyMinBytes is what a lingering session request asks (capped at
// FetchMaxBytes): an answer this big is worth its round trip, so a copy
// with a backlog gets it at once.
const copyMinBytes = 256 << 10

// sideFetchWait is the side loop's poll (a want parked during a long
// poll): what the idle poll was before it grew long, so such a want waits
// no longer than it used to. Capped at IdleFetchWait.
const sideFetchWait = 500 * time.Millisecond

// fetchSession is the client side of a KIP-227 session: what the broker's
// session holds for each partition.
type fetchSession struct {
	id    int32 // 0: none; the next request is a full fetch that asks for one
	epoch int32
	parts map[topicPartition]sessionPartition
}

type sessionPartition struct {
	id     [16]byte
	offset int64
}

func (s *fetchSession) reset() {
	s.id, s.epoch = 0, 0
	clear(s.parts)
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
	f := &leaderFetcher{r: r, leader: leader, kick: make(chan struct{}, 1), sideKick: make(chan struct{}, 1),
		parked: map[topicPartition]*fetchWant{}, busy: map[topicPartition]struct{}{},
		sess: fetchSession{parts: map[topicPartition]sessionPartition{}}}
	r.fetchers[leader] = f
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		f.loop(r.runCtx)
	}()
	go func() {
		defer r.wg.Done()
		f.sideLoop(r.runCtx)
	}()
	return f
}

// signal wakes both loops: the main loop, and the side loop in case a
// long poll is pending.
func (f *leaderFetcher) signal() {
	kick(f.kick)
	kick(f.sideKick)
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// fetch waits for a partition's source records from offset. shift is the
// copy session's SourceShift (virtual = log offset + shift). The answer
// lives in frame, which the caller releases once done with every byte of
// it (batches in flight included).
func (f *leaderFetcher) fetch(ctx context.Context, p *partition, id [16]byte, offset, shift int64) (*kmsg.FetchResponseTopicPartition, *fetchFrame, error) {
	tp := topicPartition{p.topic, p.partition}
	w := &fetchWant{p: p, id: id, offset: offset, shift: shift, reply: make(chan fetchReply, 1)}
	f.mu.Lock()
	f.parked[tp] = w
	delete(f.busy, tp)
	f.dirty = true
	f.mu.Unlock()
	f.signal()
	select {
	case <-ctx.Done():
		f.mu.Lock()
		if f.parked[tp] == w {
			delete(f.parked, tp)
			f.dirty = true
		}
		f.mu.Unlock()
		// The answer, if any, is dropped; it was sent under f.mu, so it
		// is in the channel by now or never comes.
		select {
		case rep := <-w.reply:
			if rep.frame != nil {
				rep.frame.dropSplicesOf(rep.fp.RecordBatches)
				rep.frame.release()
			}
		default:
		}
		return nil, nil, ctx.Err()
	case rep := <-w.reply:
		return rep.fp, rep.frame, rep.err
	}
}

// leave tells the fetcher a partition's copy session ended: it is neither
// parked nor busy any more (a busy partition that never comes back would
// keep the polls short).
func (f *leaderFetcher) leave(p *partition) {
	tp := topicPartition{p.topic, p.partition}
	f.mu.Lock()
	delete(f.busy, tp)
	delete(f.parked, tp)
	f.dirty = true
	f.mu.Unlock()
	f.signal()
}

func (f *leaderFetcher) loop(ctx context.Context) {
	defer func() {
		if f.conn != nil {
			f.conn.close()
		}
	}()
	var wants []*fetchWant
	var busyTimer *time.Timer
	replied := true  // parked differs from the last request's wants
	flowing := false // the last answer carried records: the next request lingers
	for ctx.Err() == nil {
		f.mu.Lock()
		wants = wants[:0]
		for _, w := range f.parked {
			if w.p.waiters.Load() > 0 {
				continue // urgent: the side loop fetches it
			}
			wants = append(wants, w)
		}
		busy, dirty := len(f.busy), f.dirty
		f.dirty = false
		f.mu.Unlock()
		if len(wants) == 0 && len(f.sess.parts) == 0 {
			select {
			case <-ctx.Done():
			case <-f.kick:
			}
			continue
		}
		if busy > 0 && !dirty {
			// A partition was just answered: give its loop a moment to
			// come back with its next offset, so the next request
			// carries it instead of leaving it to wait a whole poll.
			if busyTimer == nil {
				busyTimer = time.NewTimer(f.r.opts.FetchMaxWait)
			} else {
				busyTimer.Reset(f.r.opts.FetchMaxWait)
			}
			select {
			case <-ctx.Done():
			case <-f.kick:
				busyTimer.Stop()
				continue
			case <-busyTimer.C:
			}
		}
		wait := f.r.opts.IdleFetchWait
		switch {
		case len(wants) == 0:
			wait = 0 // only forgetting: nothing to wait for
		case busy > 0:
			wait = f.r.opts.FetchMaxWait
		case dirty || replied:
			// The wants just changed (partitions starting, answers
			// handled): more changes tend to follow, and each would
			// otherwise go to the side loop for a whole long poll.
			// The poll goes long once a short one changed nothing.
			wait = min(sideFetchWait, wait)
		}
		minBytes := int32(1)
		if flowing && len(wants) > 0 && f.r.opts.CopyLinger > 0 {
			wait = min(wait, f.r.opts.CopyLinger)
			minBytes = min(copyMinBytes, f.r.opts.FetchMaxBytes)
		}
		// A want that arrives after the snapshot leaves f.dirty set:
		// the next round rebuilds.
		got, recs := f.fetchOnce(ctx, wants, wait, minBytes, dirty || replied)
		// A lingering request that answered nothing is not the short
		// poll after a change: that poll (sideFetchWait) still comes
		// before the poll goes long, so partitions still starting join
		// the session rather than park beside a long poll in the side
		// loop (TestPartitionJoiningALongPollIsFetchedBesideIt failed half
		// its runs without this).
		replied = got || minBytes > 1 && (dirty || replied)
		flowing = recs
	}
}

// fetchOnce sends one request for wants (the parked partitions), which
// the broker answers once it has minBytes or after wait, and answers those
// that got records or an error; replied says it answered any (they are no
// longer parked), records that it answered any with records. changed false
// means the parked wants are exactly those of the last request: with a
// session, nothing to send.
func (f *leaderFetcher) fetchOnce(ctx context.Context, wants []*fetchWant, wait time.Duration, minBytes int32, changed bool) (replied, records bool) {
	r, s := f.r, &f.sess
	req := r.newFetchRequest(1, wait) // read_committed
	req.MinBytes = minBytes
	full := s.id == 0
	req.SessionID, req.SessionEpoch = s.id, s.epoch
	rebuild := full || changed || f.inRequest == nil
	if rebuild {
		f.buildRequest(req, wants)
	}
	inRequest, ids := f.inRequest, f.ids
	if wait > min(sideFetchWait, f.r.opts.IdleFetchWait) {
		// A long poll: wants parked from now until it ends (including
		// any since the loop's snapshot) go to the side loop.
		f.mu.Lock()
		f.longPoll = inRequest
		f.mu.Unlock()
		kick(f.sideKick)
		defer func() {
			f.mu.Lock()
			f.longPoll = nil
			f.mu.Unlock()
		}()
	}
	answerAll := func(err error) {
		f.answerAll(wants, err)
		replied = true
	}
	var frame *fetchFrame
	err := error(nil)
	if f.conn == nil {
		f.conn, err = r.dialFetchConn(ctx, f.leader)
	}
	if err == nil {
		frame, err = f.conn.fetch(ctx, req, spliceAllowed(inRequest, ids))
	}
	if err != nil {
		// The broker may have restarted and lost the session; the next
		// request opens a new one, on a new connection.
		if f.conn != nil {
			f.conn.close()
			f.conn = nil
		}
		s.reset()
		if ctx.Err() == nil {
			answerAll(fmt.Errorf("broker %d: fetch: %w", f.leader, err))
		}
		return
	}
	defer frame.release()
	defer frame.closeSplices() // those not delivered
	resp := &frame.resp
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		s.reset()
		if errors.Is(err, kerr.FetchSessionIDNotFound) || errors.Is(err, kerr.InvalidFetchSessionEpoch) {
			// Start over with a full fetch; the wants stay parked.
			r.log.Debug("source fetch session lost, opening a new one", "broker", f.leader, "error", err)
			r.metrics.sessionResets.Inc()
			return
		}
		answerAll(fmt.Errorf("broker %d: fetch: %w", f.leader, err))
		return
	}
	// The broker now holds exactly the partitions of this request.
	if full {
		clear(s.parts)
		s.id, s.epoch = resp.SessionID, 1
		if s.id == 0 { // no session (the broker's cache is full): stay full
			s.epoch = 0
		}
	} else {
		s.epoch = nextSessionEpoch(s.epoch)
	}
	if s.id != 0 && rebuild {
		clear(s.parts)
		for tp, w := range inRequest {
			s.parts[tp] = sessionPartition{id: w.id, offset: w.offset}
		}
	}
	return f.deliver(resp, frame, inRequest, ids)
}

// answerAll answers those of wants still parked with err; they become
// busy. A want is answered once: the other loop may have answered it, and
// a second reply would find its buffer full.
func (f *leaderFetcher) answerAll(wants []*fetchWant, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range wants {
		tp := topicPartition{w.p.topic, w.p.partition}
		if f.parked[tp] == w {
			delete(f.parked, tp)
			f.busy[tp] = struct{}{}
			w.reply <- fetchReply{err: err}
		}
	}
}

// deliver answers the wants of a request (inRequest, their topics by id in
// ids) that got records or an error in resp; replied says it answered any,
// records that it answered any with records. A want answered meanwhile
// (by the other loop's request) or gone is left alone: only the want still
// parked is answered, once.
func (f *leaderFetcher) deliver(resp *kmsg.FetchResponse, frame *fetchFrame, inRequest map[topicPartition]*fetchWant, ids map[[16]byte]string) (replied, records bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range resp.Topics {
		rt := &resp.Topics[i]
		name := rt.Topic
		if name == "" { // v13+ names topics by id only
			name = ids[rt.TopicID]
		}
		for j := range rt.Partitions {
			fp := &rt.Partitions[j]
			tp := topicPartition{name, fp.Partition}
			w := inRequest[tp]
			if w == nil || f.parked[tp] != w {
				continue // left or answered meanwhile
			}
			if fp.ErrorCode == 0 && len(fp.RecordBatches) == 0 {
				// The high watermark moved (records not yet
				// committed, or beyond what read_committed shows):
				// only the status changes; the want stays parked.
				w.p.observeHWM(fp.HighWatermark + w.shift)
				continue
			}
			delete(f.parked, tp)
			f.busy[tp] = struct{}{}
			replied = true
			records = records || len(fp.RecordBatches) > 0
			frame.hold()
			for i, spl := 0, frame.splicesIn(fp.RecordBatches); i < len(spl); i++ {
				spl[i].owned = true // the copy loop's to send or drop
			}
			w.reply <- fetchReply{fp: fp, frame: frame}
		}
	}
	return replied, records
}

// sideLoop fetches the urgent wants, and the wants parked while a long
// poll is pending that the poll does not carry (see the file comment),
// until the poll ends.
func (f *leaderFetcher) sideLoop(ctx context.Context) {
	defer func() {
		if f.sideConn != nil {
			f.sideConn.close()
		}
	}()
	var wants []*fetchWant
	for ctx.Err() == nil {
		wants = wants[:0]
		urgent := false
		f.mu.Lock()
		for tp, w := range f.parked {
			u := w.p.waiters.Load() > 0
			if u || (f.longPoll != nil && f.longPoll[tp] != w) {
				wants = append(wants, w)
				urgent = urgent || u
			}
		}
		f.mu.Unlock()
		if len(wants) == 0 {
			select {
			case <-ctx.Done():
			case <-f.sideKick:
			}
			continue
		}
		wait := min(sideFetchWait, f.r.opts.IdleFetchWait)
		if urgent {
			wait = urgentFetchWait
		}
		f.sideFetch(ctx, wants, wait)
	}
}

// sideFetch sends one sessionless fetch for wants on the side connection
// and answers those that got records or an error.
func (f *leaderFetcher) sideFetch(ctx context.Context, wants []*fetchWant, wait time.Duration) {
	r := f.r
	req := r.newFetchRequest(1, wait) // read_committed, no session
	topics := fetchTopics{r: r, req: req}
	inRequest := make(map[topicPartition]*fetchWant, len(wants))
	ids := map[[16]byte]string{}
	for _, w := range wants {
		tp := topicPartition{w.p.topic, w.p.partition}
		inRequest[tp], ids[w.id] = w, tp.topic
		topics.add(w)
	}
	var frame *fetchFrame
	err := error(nil)
	if f.sideConn == nil {
		f.sideConn, err = r.dialFetchConn(ctx, f.leader)
	}
	if err == nil {
		frame, err = f.sideConn.fetch(ctx, req, spliceAllowed(inRequest, ids))
	}
	if err == nil {
		defer frame.release()
		defer frame.closeSplices() // those not delivered
		err = kerr.ErrorForCode(frame.resp.ErrorCode)
	}
	if err != nil {
		if f.sideConn != nil {
			f.sideConn.close()
			f.sideConn = nil
		}
		if ctx.Err() == nil {
			f.answerAll(wants, fmt.Errorf("broker %d: fetch: %w", f.leader, err))
		}
		return
	}
	f.deliver(&frame.resp, frame, inRequest, ids)
}

// buildRequest fills req with the partitions the session does not have
// (all of them for a full fetch) and forgets the session's partitions that
// are not wanted, and records the wants in f.inRequest and f.ids.
func (f *leaderFetcher) buildRequest(req *kmsg.FetchRequest, wants []*fetchWant) {
	r, s := f.r, &f.sess
	full := s.id == 0
	topics := fetchTopics{r: r, req: req}
	inRequest := make(map[topicPartition]*fetchWant, len(wants))
	ids := map[[16]byte]string{}
	for _, w := range wants {
		ids[w.id] = w.p.topic
		tp := topicPartition{w.p.topic, w.p.partition}
		inRequest[tp] = w
		if sp, ok := s.parts[tp]; !full && ok && sp.offset == w.offset && sp.id == w.id {
			continue // the session has it
		}
		topics.add(w)
	}
	if !full {
		forgotten := map[string]int{}
		for tp, sp := range s.parts {
			if inRequest[tp] != nil {
				continue
			}
			i, ok := forgotten[tp.topic]
			if !ok {
				i = len(req.ForgottenTopics)
				forgotten[tp.topic] = i
				ft := kmsg.NewFetchRequestForgottenTopic()
				ft.Topic, ft.TopicID = tp.topic, sp.id
				req.ForgottenTopics = append(req.ForgottenTopics, ft)
			}
			req.ForgottenTopics[i].Partitions = append(req.ForgottenTopics[i].Partitions, tp.partition)
		}
	}
	f.inRequest, f.ids = inRequest, ids
}

// fetchTopics adds wanted partitions to a fetch request, grouped by topic:
// a topic's entry is made when its first partition is added, so topics
// stand in the order they were first wanted.
type fetchTopics struct {
	r     *Replicator
	req   *kmsg.FetchRequest
	index map[string]int // topic -> its place in req.Topics
}

func (t *fetchTopics) add(w *fetchWant) {
	i, ok := t.index[w.p.topic]
	if !ok {
		if t.index == nil {
			t.index = map[string]int{}
		}
		i = len(t.req.Topics)
		t.index[w.p.topic] = i
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = w.p.topic, w.id
		t.req.Topics = append(t.req.Topics, rt)
	}
	t.req.Topics[i].Partitions = append(t.req.Topics[i].Partitions, t.r.fetchPartition(w.p.partition, w.offset))
}

// spliceAllowed says which partitions of a request (inRequest, their
// topics by id in ids) an answer may splice: those whose copy did not
// turn splicing off (partition.noSplice).
func spliceAllowed(inRequest map[topicPartition]*fetchWant, ids map[[16]byte]string) func(string, [16]byte, int32) bool {
	return func(topic string, id [16]byte, partition int32) bool {
		if topic == "" {
			topic = ids[id]
		}
		w := inRequest[topicPartition{topic, partition}]
		return w != nil && !w.p.noSplice.Load()
	}
}

// nextSessionEpoch follows epoch; after MaxInt32 it wraps to 1 (0 asks for
// a new session).
func nextSessionEpoch(epoch int32) int32 {
	if epoch == math.MaxInt32 {
		return 1
	}
	return epoch + 1
}
