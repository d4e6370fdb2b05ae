package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kproxy/kproxy/control"
	"github.com/kproxy/kproxy/routing"
)

const statusUsage = `usage: kproxy status [-admin ADDR] [-o table|json]

Shows the routes, cutovers, group moves and replication of a running kproxy
(its admin /status). On a terminal states are marked; piped, they are plain.

`

func statusCmd(stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "kproxy admin address")
	out := fs.String("o", "table", "output: table or json")
	if err := parseFlags(fs, args, statusUsage); err != nil {
		return err
	}
	body, err := adminGet(*admin, "/status")
	if err != nil {
		return err
	}
	if *out == "json" {
		_, err := stdout.Write(body)
		return err
	}
	var d control.StatusDoc
	if err := json.Unmarshal(body, &d); err != nil {
		return fmt.Errorf("decoding /status: %w", err)
	}
	return printStatus(stdout, markerFor(stdout), d)
}

// adminGet reads path from the admin server at addr.
func adminGet(addr, path string) ([]byte, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + path)
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", path, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s from %s: %s: %s", path, addr, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// printStatus is the human form of /status.
func printStatus(w io.Writer, m marker, d control.StatusDoc) error {
	fmt.Fprintf(w, "kproxy %s (cluster id %s, node %d), config generation %d, ready %v, %d client connections\n",
		d.Proxy.Advertise, d.Proxy.ClusterID, d.Proxy.NodeID, d.Generation, d.Ready, d.Proxy.Connections)
	if d.LastReloadErr != "" {
		fmt.Fprintf(w, "last reload rejected: %s\n", d.LastReloadErr)
	}
	if in := d.Instances; in != nil {
		if !in.Formed {
			fmt.Fprintf(w, "instance %s: membership group %s not formed yet; serving as the only instance\n", in.Self, in.Group)
		} else {
			var ids []string
			for _, m := range in.Members {
				ids = append(ids, fmt.Sprintf("%s (node %d, %s)", m.ID, m.NodeID, m.Advertise))
			}
			fmt.Fprintf(w, "instance %s of %d, group %s generation %d, leader %s: %s\n", in.Self, len(in.Members), in.Group, in.Generation, in.Leader, strings.Join(ids, ", "))
		}
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tREACHABLE\tBROKERS\tTOPICS\tLAST ERROR")
	for _, c := range d.Proxy.Clusters {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", c.Name, m.state(fmt.Sprint(c.Reachable)), len(c.Brokers), c.Topics, c.LastError)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tPRODUCE\tFETCH\tCANARY")
	fmt.Fprintf(tw, "(default)\t%s\t%s\t-\n", d.RoutesDefault, d.RoutesDefault)
	for _, r := range d.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Pattern, r.Produce, r.Fetch, canaryText(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPRODUCE\tFETCH\tCANARY\tRULE")
	for _, t := range d.Topics {
		rule := t.Rule.Pattern
		if rule == "" {
			rule = "(default)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Topic, t.Rule.Produce, t.Rule.Fetch, canaryText(t.Rule), rule)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Cutovers) > 0 {
		fmt.Fprintln(w)
		if err := printCutovers(w, m, d.Cutovers); err != nil {
			return err
		}
	}
	if len(d.GroupMoves) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GROUP MOVE\tSTATE\tMOVE\tOFFSETS COPIED\tHELD MS\tHELD COMMITS\tREASON")
		for _, g := range d.GroupMoves {
			reason := g.Reason
			if reason == "" {
				reason = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s -> %s\t%d\t%d\t%d\t%s\n", g.Group, m.state(string(g.State)), g.From, g.To, g.Offsets, g.HoldMillis, g.Held, reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if err := printBypass(w, m, d.Bypass); err != nil {
		return err
	}
	if r := d.Replication; len(r.Topics) > 0 || r.Error != "" {
		fmt.Fprintln(w)
		if r.Error != "" {
			fmt.Fprintf(w, "replication error: %s\n", r.Error)
		}
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REPLICATED\tPARTITION\tSOURCE HWM\tCOPIED TO\tTARGET END\tLAG RECORDS\tLAG MS\tCATCH-UP\tERROR")
		for _, p := range r.Partitions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", p.Topic, p.Partition, p.SourceHWM, p.CopiedThrough, p.TargetEnd, p.LagRecords, p.LagMillis, catchUp(p.CatchUpMillis), p.Err)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if r := d.Replication; len(r.ToSource) > 0 {
		// The copy back of flipped topics; offsets are virtual.
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COPIED BACK\tPARTITION\tTARGET HWM\tCOPIED TO\tSOURCE END\tLAG RECORDS\tLAG MS\tERROR")
		for _, p := range r.ToSource {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", p.Topic, p.Partition, p.SourceHWM, p.CopiedThrough, p.TargetEnd, p.LagRecords, p.LagMillis, p.Err)
		}
		return tw.Flush()
	}
	return nil
}

// printBypass lists the source topics written around kproxy (nothing
// when none is, or the check is off).
func printBypass(w io.Writer, m marker, b control.BypassStatus) error {
	if b.Error != "" {
		fmt.Fprintf(w, "\nbypass check failed: %s\n", b.Error)
	}
	if len(b.Topics) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nsource topics written around kproxy (checked every %s; an application still writes to the source directly):\n", b.Interval)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BYPASSED\tRECORDS\tLAST WINDOW\tLAST SEEN")
	for _, t := range b.Topics {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", t.Topic, t.Records, t.LastRecords, t.LastSeen.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// printCutovers is the cutover table: per topic its home, the state of the
// last cutover, the hold, and a line for a drain in progress or a reason.
func printCutovers(w io.Writer, m marker, cs []control.CutoverStatus) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CUTOVER\tHOME\tSTATE\tMOVE\tHELD MS\tHELD REQUESTS\tFLIPPED AT\tNOTE")
	for _, c := range cs {
		flipped := "-"
		if !c.FlippedAt.IsZero() {
			flipped = c.FlippedAt.UTC().Format(time.RFC3339)
		}
		note := c.Progress
		if c.Reason != "" {
			note = c.Reason
		}
		if c.FetchNote != "" {
			note = strings.TrimSpace(note + " " + c.FetchNote)
		}
		if note == "" {
			note = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s -> %s\t%d\t%d\t%s\t%s\n", c.Topic, c.Home, m.state(c.State), c.From, c.To, c.HoldMillis, c.Held, flipped, note)
	}
	return tw.Flush()
}

// catchUp is the replicator's catch-up estimate for a table cell.
func catchUp(ms int64) string {
	switch {
	case ms == 0:
		return "caught up"
	case ms < 0:
		return "not catching up"
	}
	return "in " + (time.Duration(ms) * time.Millisecond).Round(time.Second).String()
}

func canaryText(r routing.RuleView) string {
	c := r.Canary
	if c == nil {
		return "-"
	}
	var who []string
	if len(c.Clients) > 0 {
		who = append(who, fmt.Sprintf("clients %v", c.Clients))
	}
	if len(c.Groups) > 0 {
		who = append(who, fmt.Sprintf("groups %v", c.Groups))
	}
	if c.Percent > 0 {
		who = append(who, fmt.Sprintf("%d%% of client ids", c.Percent))
	}
	return fmt.Sprintf("fetch %s for %s", c.Fetch, strings.Join(who, ", "))
}
