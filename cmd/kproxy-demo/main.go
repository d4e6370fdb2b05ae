// Command kproxy-demo tells kproxy's whole story on two embedded clusters
// (`make demo`): traffic through kproxy, a flip to the target and a
// rollback under load, and a printed verdict. It is a binary of its own so
// that the serving binary, cmd/kproxy, links neither kfake nor the test
// checker (docs/internals.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/demo"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "kproxy-demo: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kproxy-demo", flag.ContinueOnError)
	var opts demo.Options
	fs.DurationVar(&opts.Duration, "duration", 5*time.Second, "how long the producers run")
	fs.IntVar(&opts.Rate, "rate", 2000, "records per second, all producers together")
	fs.DurationVar(&opts.DrainTimeout, "drain-timeout", 15*time.Second, "how long consumers may take to read every acked record")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts.Out = os.Stdout
	level := hclog.Warn
	if l := os.Getenv("KPROXY_DEMO_LOG"); l != "" {
		level = hclog.LevelFromString(l)
	}
	opts.Log = hclog.New(&hclog.LoggerOptions{Name: "kproxy", Level: level, Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := demo.Run(ctx, opts)
	if err != nil {
		return err
	}
	if !res.Pass() {
		return errors.New("verdict FAIL")
	}
	return nil
}
