package verify

// Progress of a verify run, on stderr so the report on stdout stays
// clean for scripts (-o json | jq): a bar redrawn in place on a terminal,
// a plain line every -progress-every otherwise (a CI log or a file keeps
// a readable history, no carriage returns or escape codes).

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// progressOut receives the progress; progressIsTerminal says whether it is
// a terminal. Tests replace both.
var (
	progressOut        io.Writer = os.Stderr
	progressIsTerminal           = func() bool {
		if os.Getenv("TERM") == "dumb" {
			return false
		}
		st, err := os.Stderr.Stat()
		return err == nil && st.Mode()&os.ModeCharDevice != 0
	}
)

// progress counts a run's work in source offsets: total grows as each
// partition learns its range, done as records are compared (and by the
// rest of a partition's range when it ends: markers and aborted records
// take offsets without being compared).
type progress struct {
	total, done atomic.Int64
	sized       atomic.Int64 // partitions whose range is in total
	partitions  int64
	finished    atomic.Int64
	start       time.Time
}

func newProgress(partitions int) *progress {
	return &progress{partitions: int64(partitions), start: time.Now()}
}

// partitionDone accounts a finished partition.
func (p *progress) partitionDone(pr *partitionReport, compared int64) {
	if p == nil {
		return
	}
	if rest := (pr.Source[1] - pr.Source[0]) - compared; pr.hasMap && rest > 0 {
		p.done.Add(rest)
	}
	p.finished.Add(1)
}

// add counts n offsets compared (nil-safe: runs without progress).
func (p *progress) add(n int64) {
	if p != nil {
		p.done.Add(n)
	}
}

// addTotal adds one partition's range (once per partition).
func (p *progress) addTotal(n int64) {
	if p != nil {
		p.total.Add(max(n, 0))
		p.sized.Add(1)
	}
}

// fraction is done/total, scaled by the share of partitions whose range
// is known (the others are assumed alike); 1 once every partition has
// finished.
func (p *progress) fraction() float64 {
	if p.partitions > 0 && p.finished.Load() == p.partitions {
		return 1
	}
	total, done, sized := p.total.Load(), p.done.Load(), p.sized.Load()
	if total <= 0 || p.partitions == 0 {
		return float64(p.finished.Load()) / float64(max(p.partitions, 1))
	}
	return min(float64(done)/float64(total)*float64(sized)/float64(p.partitions), 1)
}

// eta is the remaining time at the rate so far ("" when unknown).
func (p *progress) eta(now time.Time) string {
	f := p.fraction()
	if f <= 0 || f >= 1 {
		return ""
	}
	el := now.Sub(p.start)
	return (time.Duration(float64(el)/f) - el).Round(time.Second).String()
}

const barWidth = 30

// bar is the terminal form: redrawn in place (\r, then erase to the end
// of the line).
func (p *progress) bar(now time.Time) string {
	f := p.fraction()
	n := int(f * barWidth)
	s := fmt.Sprintf("\r[%s%s] %3.0f%%  %d/%d offsets  %d/%d partitions", strings.Repeat("#", n), strings.Repeat(" ", barWidth-n),
		f*100, p.done.Load(), p.total.Load(), p.finished.Load(), p.partitions)
	if eta := p.eta(now); eta != "" {
		s += "  eta " + eta
	}
	return s + "\x1b[K"
}

// line is the plain form: one self-contained line.
func (p *progress) line(now time.Time) string {
	s := fmt.Sprintf("verify: %.0f%% done, %d of %d offsets compared, %d of %d partitions finished", p.fraction()*100,
		p.done.Load(), p.total.Load(), p.finished.Load(), p.partitions)
	if eta := p.eta(now); eta != "" {
		s += ", eta " + eta
	}
	return s + "\n"
}

// report draws the progress until stop is closed, then draws it once
// more (complete) and closes done. A bar is redrawn every 200 ms; a plain
// line is written every `every` (0: only the last one).
func (p *progress) report(w io.Writer, term bool, every time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := every
	if term {
		tick = 200 * time.Millisecond
	}
	var c <-chan time.Time
	if tick > 0 {
		t := time.NewTicker(tick)
		defer t.Stop()
		c = t.C
	}
	for {
		select {
		case <-stop:
			if term {
				fmt.Fprint(w, p.bar(time.Now())+"\n")
			} else {
				fmt.Fprint(w, p.line(time.Now()))
			}
			return
		case now := <-c:
			if term {
				fmt.Fprint(w, p.bar(now))
			} else {
				fmt.Fprint(w, p.line(now))
			}
		}
	}
}
