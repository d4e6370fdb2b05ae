package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/control"
)

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("c", "kproxy.yaml", "config file")
	fs.StringVar(path, "config", "kproxy.yaml", "config file")
	if err := parseFlags(fs, args, "usage: kproxy run -c FILE\n\nServes Kafka clients with the config in FILE and reloads it when it changes.\n\n"); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	log := newLogger(cfg, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	inst, err := control.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer inst.Close()
	go func() {
		if err := config.NewReloader(*path, cfg, log.Named("config"), inst.Apply).Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("config watcher stopped; reloads are off until restart", "error", err)
		}
	}()
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

func newLogger(cfg *config.Config, out *os.File) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "kproxy",
		Level:      hclog.LevelFromString(cfg.Log.Level),
		JSONFormat: cfg.Log.JSON,
		Output:     out,
	})
}
