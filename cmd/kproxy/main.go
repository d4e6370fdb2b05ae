// Command kproxy is a Kafka-protocol-aware cutover proxy. See the README.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/kproxy/kproxy/verify"
)

const usage = `kproxy: a Kafka cutover proxy

usage:
  kproxy run -c FILE        serve Kafka clients with the config in FILE (hot-reloaded)
  kproxy validate -c FILE   parse and validate FILE, print problems, start nothing
  kproxy status [-admin ADDR] [-o table|json]   show routes and upstream state from a running kproxy
  kproxy plan -c NEW.yaml [-admin ADDR] [-o table|json]   what a reload to NEW would do, with its preflight gates (exit 1 if one fails)
  kproxy clients [-admin ADDR] [-o table|json]   who is connected: client ids, software, topics, groups, clusters reached
  kproxy probe [-admin ADDR] ready|live   exit 0 when a running kproxy is ready (/readyz) or live (/healthz)
  kproxy migrate plan|apply -f MANIFEST -c FILE [-dry-run]   walk a migration manifest (canary, flip, groups) by editing FILE, waiting on gates
  kproxy verify -c FILE [-o table|json] TOPIC...   compare source and target record by record through the offset maps (run before a flip)
  kproxy demo               the demo moved: run "make demo" (go run ./cmd/kproxy-demo)
  kproxy --version          print the version and the commit it was built from

"kproxy COMMAND -h" prints a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its exit code returned, so that tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCmd(args[1:])
	case "validate":
		err = validateCmd(args[1:])
	case "status":
		err = statusCmd(stdout, args[1:])
	case "plan":
		err = planCmd(stdout, args[1:])
	case "clients":
		err = clientsCmd(stdout, args[1:])
	case "probe":
		err = probeCmd(stdout, args[1:])
	case "migrate":
		err = migrateCmd(stdout, args[1:])
	case "verify":
		err = verify.Command(stdout, args[1:])
	case "demo":
		// The demo links embedded test clusters; the serving binary does not.
		fmt.Fprintln(stdout, "the demo is its own binary: run `make demo` (go run ./cmd/kproxy-demo)")
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, versionLine())
		return 0
	default:
		fmt.Fprintf(stderr, "kproxy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		// -h / --help: the usage went out already; asking for it is no error.
		return 0
	case errors.Is(err, errGateFailed):
		// plan printed its table; the exit code is the verdict.
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "kproxy %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// parseFlags parses args into fs. The usage that -h / --help asks for goes
// to stdout (a help request succeeds and is often piped into a pager); the
// usage after a bad flag goes to stderr with the error.
func parseFlags(fs *flag.FlagSet, args []string, help string) error {
	var buf bytesBuffer
	fs.SetOutput(&buf)
	fs.Usage = func() {
		fmt.Fprint(&buf, help)
		fs.PrintDefaults()
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Stdout.Write(buf)
	case err != nil:
		os.Stderr.Write(buf)
	}
	return err
}

// bytesBuffer is the smallest io.Writer that keeps what it is given.
type bytesBuffer []byte

func (b *bytesBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
