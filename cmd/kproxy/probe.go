package main

import (
	"flag"
	"fmt"
	"io"
)

const probeUsage = `usage: kproxy probe [-admin ADDR] ready|live

Asks a running kproxy's admin server for /readyz (ready) or /healthz (live)
and exits 0 when it answers 200, 1 otherwise: a Kubernetes exec probe that
works while the admin server listens on loopback only (its default), so the
admin port never has to be opened to the pod network for the kubelet.

`

func probeCmd(stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "kproxy admin address")
	if err := parseFlags(fs, args, probeUsage); err != nil {
		return err
	}
	var path string
	switch fs.Arg(0) {
	case "ready":
		path = "/readyz"
	case "live":
		path = "/healthz"
	default:
		return fmt.Errorf("want ready or live, got %q\n\n%s", fs.Arg(0), probeUsage)
	}
	body, err := adminGet(*admin, path)
	if err != nil {
		return err
	}
	_, err = stdout.Write(body)
	return err
}
