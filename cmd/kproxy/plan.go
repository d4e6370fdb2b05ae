package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kproxy/kproxy/control"
)

const planUsage = `usage: kproxy plan -c NEW.yaml [-admin ADDR] [-o table|json]

Asks a running kproxy what a reload to NEW.yaml would do: the config diff,
each action (cutovers, route switches, fetch moves, canary rules, group
moves, replication starts) and each cutover's preflight gates, measured
now. Exits 1 when a gate fails, 0 when every gate passes.

`

// errGateFailed: the plan was printed and a gate failed (exit 1, no
// further message).
var errGateFailed = errors.New("a preflight gate failed")

func planCmd(stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	path := fs.String("c", "", "the candidate config file")
	fs.StringVar(path, "config", "", "the candidate config file")
	admin := fs.String("admin", "127.0.0.1:9644", "kproxy admin address")
	out := fs.String("o", "table", "output: table or json")
	if err := parseFlags(fs, args, planUsage); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("name the candidate config with -c FILE")
	}
	if *out != "table" && *out != "json" {
		return fmt.Errorf("-o %q: want table or json", *out)
	}
	candidate, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	// Gates ask both clusters; each has a 10 s budget on the server.
	cl := &http.Client{Timeout: 60 * time.Second}
	resp, err := cl.Post("http://"+*admin+"/plan", "application/yaml", bytes.NewReader(candidate))
	if err != nil {
		return fmt.Errorf("asking %s for a plan: %w", *admin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", *path, strings.TrimSpace(string(body)))
	}
	var doc control.PlanDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("decoding the plan: %w", err)
	}
	if *out == "json" {
		if _, err := stdout.Write(body); err != nil {
			return err
		}
	} else if err := printPlan(stdout, markerFor(stdout), doc); err != nil {
		return err
	}
	if !doc.Pass {
		return errGateFailed
	}
	return nil
}

// printPlan is the human form of a plan: changes, then actions with their
// gates as one table.
func printPlan(w io.Writer, m marker, doc control.PlanDoc) error {
	if len(doc.Changes) == 0 {
		fmt.Fprintln(w, "no config changes")
	} else {
		fmt.Fprintln(w, "config changes:")
		for _, c := range doc.Changes {
			fmt.Fprintln(w, "  "+c)
		}
	}
	for _, r := range doc.Restart {
		fmt.Fprintln(w, "  needs a restart (a reload refuses it): "+r)
	}
	fmt.Fprintln(w)
	if len(doc.Actions) == 0 {
		fmt.Fprintln(w, "nothing would happen")
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if len(doc.Actions) > 0 {
		fmt.Fprintln(tw, "ACTION\tSUBJECT\tGATE\tRESULT\tMEASURED")
	}
	for _, a := range doc.Actions {
		fmt.Fprintf(tw, "%s\t%s\t\t%s\t%s\n", a.Kind, a.Subject, m.blank(), a.What)
		for _, g := range a.Gates {
			res := "pass"
			if !g.Pass {
				res = "fail"
			}
			name := g.Gate
			if g.Required {
				name += " (required)"
			}
			fmt.Fprintf(tw, "\t\t%s\t%s\t%s\n", name, m.state(res), g.Measured)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	switch {
	case doc.Refused:
		fmt.Fprintln(w, "verdict: a reload to this config would be refused, in whole or for some topics (see the failed required gates and restart lines)")
	case !doc.Pass:
		fmt.Fprintln(w, "verdict: a gate failed; the reload would still apply (the gate is not in cutover.require)")
	default:
		fmt.Fprintln(w, "verdict: every gate passes")
	}
	return nil
}
