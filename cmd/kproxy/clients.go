package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kproxy/kproxy/control"
	"github.com/kproxy/kproxy/proxy"
)

const clientsUsage = `usage: kproxy clients [-admin ADDR] [-o table|json]

Lists the client connections of a running kproxy (its admin /clients):
client.id, client software, source address, topics produced and fetched,
groups, transactional ids, the upstream clusters their requests reached,
and when each was first and last seen. Connections closed in the last ten
minutes are listed too.

`

func clientsCmd(stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("clients", flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "kproxy admin address")
	out := fs.String("o", "table", "output: table or json")
	if err := parseFlags(fs, args, clientsUsage); err != nil {
		return err
	}
	if *out != "table" && *out != "json" {
		return fmt.Errorf("-o %q: want table or json", *out)
	}
	body, err := adminGet(*admin, "/clients")
	if err != nil {
		return err
	}
	if *out == "json" {
		_, err := stdout.Write(body)
		return err
	}
	var d control.ClientsDoc
	if err := json.Unmarshal(body, &d); err != nil {
		return fmt.Errorf("decoding /clients: %w", err)
	}
	return printClients(stdout, d.Clients, time.Now())
}

func printClients(w io.Writer, cs []proxy.ClientInfo, now time.Time) error {
	if len(cs) == 0 {
		fmt.Fprintln(w, "no client connections")
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT ID\tSOFTWARE\tREMOTE\tPRODUCED\tFETCHED\tGROUPS\tTXN IDS\tCLUSTERS\tFIRST SEEN\tLAST SEEN\tCONN")
	for _, c := range cs {
		conn := "open"
		if !c.Open {
			conn = "closed " + ago(now, c.ClosedAt)
		}
		sw := strings.TrimSpace(c.Software + " " + c.SoftwareVersion)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(c.ClientID), dash(sw), c.Remote,
			names(c.Produced), names(c.Fetched), names(c.Groups), names(c.TransactionalID), names(c.Clusters),
			ago(now, c.FirstSeen), ago(now, c.LastSeen), conn)
	}
	return tw.Flush()
}

func names(s []string) string { return dash(strings.Join(s, ",")) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago is a time as its distance from now, rounded for reading.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return d.Round(time.Second).String() + " ago"
	}
	return d.Round(time.Minute).String() + " ago"
}
