package main

// TLS and SASL for the three Go clients (-tls-ca, -sasl, -sasl-user,
// -sasl-password-file). The password is read from a file, never taken as a
// flag: flags show in ps and in test logs.

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	xscram "github.com/xdg-go/scram"
)

// secureConfig is what -tls-ca and -sasl* resolve to.
type secureConfig struct {
	tls       *tls.Config // nil: plaintext
	mechanism string      // "": no SASL
	user      string
	pass      string
}

func loadSecure(caFile, mechanism, user, passFile string) (secureConfig, error) {
	var s secureConfig
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return s, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return s, fmt.Errorf("no certificate in %s", caFile)
		}
		s.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if mechanism == "" {
		return s, nil
	}
	switch mechanism {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		return s, fmt.Errorf("-sasl must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	}
	if passFile == "" || user == "" {
		return s, fmt.Errorf("-sasl needs -sasl-user and -sasl-password-file")
	}
	b, err := os.ReadFile(passFile)
	if err != nil {
		return s, err
	}
	s.mechanism, s.user, s.pass = mechanism, user, strings.TrimSpace(string(b))
	return s, nil
}

func (s secureConfig) franz() []kgo.Opt {
	var opts []kgo.Opt
	if s.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(s.tls.Clone()))
	}
	switch s.mechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: s.user, Pass: s.pass}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.user, Pass: s.pass}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.user, Pass: s.pass}.AsSha512Mechanism()))
	}
	return opts
}

func (s secureConfig) sarama(cfg *sarama.Config) {
	if s.tls != nil {
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = s.tls.Clone()
	}
	if s.mechanism == "" {
		return
	}
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Handshake = true
	cfg.Net.SASL.User, cfg.Net.SASL.Password = s.user, s.pass
	switch s.mechanism {
	case "PLAIN":
		cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case "SCRAM-SHA-256":
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaSCRAM{hash: xscram.HashGeneratorFcn(sha256.New)} }
	case "SCRAM-SHA-512":
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaSCRAM{hash: xscram.HashGeneratorFcn(sha512.New)} }
	}
}

// saramaSCRAM adapts xdg-go/scram to sarama.SCRAMClient (sarama leaves the
// SCRAM implementation to the application).
type saramaSCRAM struct {
	hash xscram.HashGeneratorFcn
	conv *xscram.ClientConversation
}

func (c *saramaSCRAM) Begin(user, pass, authzID string) error {
	cl, err := c.hash.NewClient(user, pass, authzID)
	if err != nil {
		return err
	}
	c.conv = cl.NewConversation()
	return nil
}

func (c *saramaSCRAM) Step(challenge string) (string, error) { return c.conv.Step(challenge) }

func (c *saramaSCRAM) Done() bool { return c.conv.Done() }
