package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/migrate"
)

const migrateUsage = `usage: kproxy migrate plan|apply -f MANIFEST.yaml -c CONFIG.yaml [-admin ADDR] [-dry-run] [-timeout D]

Walks a migration manifest (waves of topics: canary steps, the flip, then
the groups' homes) by editing CONFIG.yaml, the file the running kproxy
watches, and waiting between steps for kproxy's admin API: POST /plan's
gates before an edit, /status to show it applied after. Nothing is kept
apart from the config and /status, so apply after a crash resumes at the
first step not done. "plan" lists the steps, done or pending, and the next
step's gates; "apply -dry-run" plans the next edit and writes nothing.
A wave's topics may be globs ("orders-*"), expanded at start against the
topics the running kproxy knows; one that matches none is an error.

`

func migrateCmd(stdout io.Writer, args []string) error {
	if len(args) == 0 || (args[0] != "plan" && args[0] != "apply") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, migrateUsage)
			return flag.ErrHelp
		}
		return errors.New("want `kproxy migrate plan` or `kproxy migrate apply` (-h for help)")
	}
	fs := flag.NewFlagSet("migrate "+args[0], flag.ContinueOnError)
	manifest := fs.String("f", "", "the migration manifest")
	path := fs.String("c", "", "the config file the running kproxy watches (edited by apply)")
	admin := fs.String("admin", "", "kproxy admin address (default: the config's admin address)")
	dryRun := fs.Bool("dry-run", false, "apply: plan the next edit, write nothing")
	timeout := fs.Duration("timeout", 10*time.Minute, "the longest wait for a step's gates or for kproxy to apply it")
	if err := parseFlags(fs, args[1:], migrateUsage); err != nil {
		return err
	}
	if *manifest == "" || *path == "" {
		return errors.New("name the manifest with -f FILE and the config with -c FILE")
	}
	m, err := migrate.Load(*manifest)
	if err != nil {
		return err
	}
	if *admin == "" {
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		if *admin = cfg.Admin; *admin == "" {
			return fmt.Errorf("%s has no admin address: pass -admin", *path)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r := &migrate.Runner{Manifest: m, ConfigPath: *path, Admin: migrate.HTTPAdmin{Addr: *admin}, Out: stdout, Timeout: *timeout}
	if args[0] == "plan" {
		return r.Plan(ctx)
	}
	return r.Apply(ctx, *dryRun)
}
