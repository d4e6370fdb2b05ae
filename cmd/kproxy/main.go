// Command kproxy is a Kafka-protocol-aware cutover proxy. See the README.
package main

import (
	"fmt"
	"os"

	"github.com/kproxy/kproxy/verify"
)

const usage = `kproxy: a Kafka cutover proxy

usage:
  kproxy run -c FILE        serve Kafka clients with the config in FILE (hot-reloaded)
  kproxy validate -c FILE   parse and validate FILE, print problems, start nothing
  kproxy status [-admin ADDR] [-o table|json]   show routes and upstream state from a running kproxy
  kproxy verify -c FILE [-o table|json] TOPIC...   compare source and target record by record through the offset maps (run before a flip)
  kproxy demo               the demo moved: run "make demo" (go run ./cmd/kproxy-demo)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "validate":
		err = validateCmd(os.Args[2:])
	case "status":
		err = statusCmd(os.Args[2:])
	case "verify":
		err = verify.Command(os.Stdout, os.Args[2:])
	case "demo":
		// The demo links embedded test clusters; the serving binary does not.
		fmt.Println("the demo is its own binary: run `make demo` (go run ./cmd/kproxy-demo)")
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "kproxy: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kproxy %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
