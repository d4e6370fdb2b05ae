// Command kcheck checks produce/consume histories written by the kproxy client
// drivers (or Kafka's VerifiableProducer / VerifiableConsumer --verbose).
//
//	kcheck -acks prod1.jsonl prod2.jsonl -consumed cons1.jsonl cons2.jsonl
//
// All -consumed files are taken as one consumer group. The verdict goes to
// stdout; the exit status is 0 when the history is clean, 1 on any anomaly and
// 2 on usage or parse errors.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/kproxy/kproxy/test/checker"
)

const usage = `usage: kcheck [options] -acks FILE... -consumed FILE...

Files hold JSON lines (driver format, VerifiableProducer or VerifiableConsumer
--verbose output); "-" is stdin. Lists continue until the next option.

  -acks FILE...        take ack events (producer_send_success) from these files
  -consumed FILE...    take consume events (record_data) from these files
  -events FILE...      take both kinds from these files
  -expect-all[=bool]   consumers should have read every acked record (default true)
  -allow-redelivery    tolerate an offset consumed twice (at-least-once)
  -require-acked       fail on consumed offsets nobody acked
  -allow-empty         do not fail when there is nothing to check
  -examples N          show at most N example anomalies (default 20)
  -v                   per-partition breakdown and examples
  -json                print the report as JSON
`

type config struct {
	acks, consumed, events []string
	opts                   checker.Options
	allowEmpty             bool
	verbose                bool
	asJSON                 bool
}

func parseArgs(args []string) (*config, error) {
	c := &config{opts: checker.Options{ExpectAll: true}}
	var list *[]string
	boolFlag := func(name, val string, hasVal bool) (bool, error) {
		if !hasVal {
			return true, nil
		}
		b, err := strconv.ParseBool(val)
		if err != nil {
			return false, fmt.Errorf("-%s: bad boolean %q", name, val)
		}
		return b, nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-" || !strings.HasPrefix(a, "-") {
			if list == nil {
				return nil, fmt.Errorf("file %q given before -acks, -consumed or -events", a)
			}
			*list = append(*list, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		val, hasVal := "", false
		if j := strings.IndexByte(name, '='); j >= 0 {
			name, val, hasVal = name[:j], name[j+1:], true
		}
		var err error
		switch name {
		case "acks":
			list = &c.acks
		case "consumed":
			list = &c.consumed
		case "events":
			list = &c.events
		case "expect-all":
			c.opts.ExpectAll, err = boolFlag(name, val, hasVal)
		case "allow-redelivery":
			c.opts.AllowRedelivery, err = boolFlag(name, val, hasVal)
		case "require-acked":
			c.opts.RequireAcked, err = boolFlag(name, val, hasVal)
		case "allow-empty":
			c.allowEmpty, err = boolFlag(name, val, hasVal)
		case "v":
			c.verbose, err = boolFlag(name, val, hasVal)
		case "json":
			c.asJSON, err = boolFlag(name, val, hasVal)
		case "examples":
			if !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("-examples needs a number")
				}
				i++
				val = args[i]
			}
			n, perr := strconv.Atoi(val)
			if perr != nil {
				return nil, fmt.Errorf("-examples: bad number %q", val)
			}
			if n == 0 {
				n = -1
			}
			c.opts.MaxExamples = n
		case "h", "help":
			return nil, fmt.Errorf("help")
		default:
			return nil, fmt.Errorf("unknown option %q", a)
		}
		if err != nil {
			return nil, err
		}
		if name != "acks" && name != "consumed" && name != "events" {
			list = nil
		}
	}
	if len(c.acks)+len(c.consumed)+len(c.events) == 0 {
		return nil, fmt.Errorf("no input files")
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseArgs(args)
	if err != nil {
		if err.Error() != "help" {
			fmt.Fprintln(stderr, "kcheck:", err)
		}
		fmt.Fprint(stderr, usage)
		return 2
	}
	var acks []checker.Ack
	var consumed []checker.Consumed
	var errs []checker.Event
	var malformed []string
	ignored := 0
	load := func(files []string, wantAcks, wantConsumed bool) error {
		for _, f := range files {
			l, err := checker.ParseFile(f, checker.ParseOptions{})
			if err != nil {
				return err
			}
			if wantAcks {
				acks = append(acks, l.Acks...)
			} else {
				ignored += len(l.Acks)
			}
			if wantConsumed {
				consumed = append(consumed, l.Consumed...)
			} else {
				ignored += len(l.Consumed)
			}
			errs = append(errs, l.Errors...)
			malformed = append(malformed, l.Malformed...)
		}
		return nil
	}
	for _, step := range []struct {
		files  []string
		ack, c bool
	}{{c.acks, true, false}, {c.consumed, false, true}, {c.events, true, true}} {
		if err := load(step.files, step.ack, step.c); err != nil {
			fmt.Fprintln(stderr, "kcheck:", err)
			return 2
		}
	}
	for i, m := range malformed {
		if i == 5 {
			fmt.Fprintf(stderr, "kcheck: warning: ... %d more non-JSON lines\n", len(malformed)-5)
			break
		}
		fmt.Fprintln(stderr, "kcheck: warning: not a JSON event:", m)
	}
	if ignored > 0 {
		fmt.Fprintf(stderr, "kcheck: note: ignored %d events of the other kind (ack events in -consumed files or consume events in -acks files)\n", ignored)
	}
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "kcheck: note: %d error events, first: %s: %s\n", len(errs), errs[0].Client, errs[0].Msg)
	}

	r := checker.Check(acks, consumed, c.opts)
	ok := r.OK()
	if c.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		out := struct {
			OK      bool   `json:"ok"`
			Verdict string `json:"verdict"`
			checker.Report
			Errors    int `json:"errors"`
			Malformed int `json:"malformed_lines"`
		}{ok, r.String(), r, len(errs), len(malformed)}
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(stderr, "kcheck:", err)
			return 2
		}
	} else if c.verbose || !ok {
		fmt.Fprint(stdout, r.Details())
	} else {
		fmt.Fprintln(stdout, r.String())
	}
	if len(acks) == 0 && len(consumed) == 0 && !c.allowEmpty {
		fmt.Fprintln(stderr, "kcheck: FAIL: nothing to check (no acked and no consumed records)")
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
