package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"
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
	var d statusDoc
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
	fmt.Fprintln(tw, "TOPIC\tPRODUCE\tFETCH\tCANARY")
	fmt.Fprintf(tw, "(default)\t%s\t%s\t-\n", d.RoutesDefault, d.RoutesDefault)
	for _, r := range d.Routes {
		canary := "-"
		if c := r.Canary; c != nil {
			canary = fmt.Sprintf("fetch %s for clients %v groups %v percent %d", c.Fetch, c.Clients, c.Groups, c.Percent)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Pattern, r.Produce, r.Fetch, canary)
	}
	return tw.Flush()
}
