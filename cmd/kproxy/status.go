package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kproxy/kproxy/control"
	"github.com/kproxy/kproxy/routing"
)

func statusCmd(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "kproxy admin address")
	out := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + *admin + "/status")
	if err != nil {
		return fmt.Errorf("reading /status from %s: %w", *admin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if *out == "json" {
		_, err := os.Stdout.Write(body)
		return err
	}
	var d control.StatusDoc
	if err := json.Unmarshal(body, &d); err != nil {
		return fmt.Errorf("decoding /status: %w", err)
	}
	fmt.Printf("kproxy %s (cluster id %s, node %d), config generation %d, ready %v, %d client connections\n",
		d.Proxy.Advertise, d.Proxy.ClusterID, d.Proxy.NodeID, d.Generation, d.Ready, d.Proxy.Connections)
	if d.LastReloadErr != "" {
		fmt.Printf("last reload rejected: %s\n", d.LastReloadErr)
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tREACHABLE\tBROKERS\tTOPICS\tLAST ERROR")
	for _, c := range d.Proxy.Clusters {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%s\n", c.Name, c.Reachable, len(c.Brokers), c.Topics, c.LastError)
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tPRODUCE\tFETCH\tCANARY")
	fmt.Fprintf(tw, "(default)\t%s\t%s\t-\n", d.RoutesDefault, d.RoutesDefault)
	for _, r := range d.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Pattern, r.Produce, r.Fetch, canaryText(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
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
		fmt.Println()
		if err := printCutovers(os.Stdout, d.Cutovers); err != nil {
			return err
		}
	}
	if len(d.GroupMoves) > 0 {
		fmt.Println()
		tw = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GROUP MOVE\tSTATE\tMOVE\tOFFSETS COPIED\tHELD MS\tHELD COMMITS\tREASON")
		for _, g := range d.GroupMoves {
			reason := g.Reason
			if reason == "" {
				reason = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s -> %s\t%d\t%d\t%d\t%s\n", g.Group, g.State, g.From, g.To, g.Offsets, g.HoldMillis, g.Held, reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if r := d.Replication; len(r.Topics) > 0 || r.Error != "" {
		fmt.Println()
		if r.Error != "" {
			fmt.Printf("replication error: %s\n", r.Error)
		}
		tw = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REPLICATED\tPARTITION\tSOURCE HWM\tCOPIED TO\tTARGET END\tLAG RECORDS\tLAG MS\tERROR")
		for _, p := range r.Partitions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", p.Topic, p.Partition, p.SourceHWM, p.CopiedThrough, p.TargetEnd, p.LagRecords, p.LagMillis, p.Err)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if r := d.Replication; len(r.ToSource) > 0 {
		// The copy back of flipped topics; offsets are virtual.
		fmt.Println()
		tw = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COPIED BACK\tPARTITION\tTARGET HWM\tCOPIED TO\tSOURCE END\tLAG RECORDS\tLAG MS\tERROR")
		for _, p := range r.ToSource {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", p.Topic, p.Partition, p.SourceHWM, p.CopiedThrough, p.TargetEnd, p.LagRecords, p.LagMillis, p.Err)
		}
		return tw.Flush()
	}
	return nil
}

// printCutovers is the cutover table: per topic its home, the state of the
// last cutover, the hold, and a line for a drain in progress or a reason.
func printCutovers(w io.Writer, cs []control.CutoverStatus) error {
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s -> %s\t%d\t%d\t%s\t%s\n", c.Topic, c.Home, c.State, c.From, c.To, c.HoldMillis, c.Held, flipped, note)
	}
	return tw.Flush()
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
