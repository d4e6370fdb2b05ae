// Command kproxy-users adds or replaces a user in a kproxy users file
// (docs/security.md): it reads the password from standard input, so that it
// never appears in the process list or shell history, and writes only the
// salted SCRAM credentials.
//
//	printf '%s' "$PASSWORD" | kproxy-users -f /etc/kproxy/users.yaml -u orders-app
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kproxy/kproxy/secure"
)

func main() {
	file := flag.String("f", "", "users file to create or update (required)")
	user := flag.String("u", "", "user name (required)")
	iters := flag.Int("iterations", 8192, fmt.Sprintf("PBKDF2 iterations (at least %d)", secure.MinIterations))
	flag.Parse()
	if err := run(*file, *user, *iters); err != nil {
		fmt.Fprintln(os.Stderr, "kproxy-users:", err)
		os.Exit(1)
	}
}

func run(file, user string, iters int) error {
	if file == "" || user == "" {
		return errors.New("-f and -u are required; the password is read from standard input")
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return errors.New("no password on standard input")
	}
	pass := strings.TrimRight(line, "\r\n")
	data, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	out, err := secure.SetUser(data, user, pass, iters)
	if err != nil {
		return err
	}
	// Replace the file in one step, so kproxy never reads half of it.
	tmp, err := os.CreateTemp(filepath.Dir(file), ".users-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(out); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "kproxy-users: %s set in %s (SCRAM-SHA-256 and SCRAM-SHA-512, %d iterations)\n", user, file, iters)
	return nil
}
