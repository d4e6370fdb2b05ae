// Command kafkasecrets makes the throwaway secrets of the real-Kafka harness's
// SASL_SSL listeners (test/kafka/kafka.sh with KAFKA_SECURE=1), at `up` time,
// with Go's crypto, into one directory under the run dir; nothing it writes is
// ever committed.
//
//	kafkasecrets -dir $KAFKA_RUN_DIR/secure
//
// It writes (all mode 0600):
//
//	ca.pem           the CA clients trust
//	broker.pem       the brokers' PKCS#8 key followed by their certificate
//	                 (Kafka's ssl.keystore.type=PEM), valid for 127.0.0.1
//	broker.key       the brokers' key alone and
//	broker.crt       their certificate alone, for Go and librdkafka clients
//	                 that want them apart (not needed by tests today)
//	kproxy.password  the password of the brokers' SASL user "kproxy"
//	                 (SCRAM-SHA-256/512 created at format time, PLAIN by JAAS)
//
// A second run replaces them all.
package main

import (
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kproxy/kproxy/secure/securetest"
)

func main() {
	dir := flag.String("dir", "", "directory to write the secrets into (created)")
	valid := flag.Duration("valid", 7*24*time.Hour, "how long the CA and the broker certificate are valid")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "kafkasecrets: -dir is required")
		os.Exit(2)
	}
	if err := write(*dir, *valid); err != nil {
		fmt.Fprintln(os.Stderr, "kafkasecrets:", err)
		os.Exit(1)
	}
}

func write(dir string, valid time.Duration) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := securetest.MakeCA("kproxy-harness-ca", valid)
	if err != nil {
		return err
	}
	cert, key, err := ca.MakeCert(pkix.Name{CommonName: "localhost"}, valid)
	if err != nil {
		return err
	}
	// Letters and digits only: the password goes into a JAAS line and a
	// StorageTool --add-scram argument, neither of which wants quoting.
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.pem":          ca.CertPEM,
		"broker.pem":      append(append([]byte(nil), key...), cert...),
		"broker.key":      key,
		"broker.crt":      cert,
		"kproxy.password": []byte(hex.EncodeToString(pw)),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
