package main

import (
	"flag"
	"fmt"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/routing"
)

func validateCmd(args []string) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	path := fs.String("c", "kproxy.yaml", "config file")
	fs.StringVar(path, "config", "kproxy.yaml", "config file")
	if err := parseFlags(fs, args, "usage: kproxy validate -c FILE\n\nParses and validates FILE and prints its problems; starts nothing.\n\n"); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("%s is invalid:\n%w", *path, err)
	}
	if _, err := routing.NewTable(cfg); err != nil {
		return fmt.Errorf("%s: routes: %w", *path, err)
	}
	fmt.Printf("%s is valid\n", *path)
	return nil
}
