package secure

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/config"
)

// ServerTLS builds the tls.Config of a TLS listener. The certificate is
// loaded now (a listener whose certificate does not load must not start)
// and re-read when its files change (certReloader).
func ServerTLS(c *config.ServerTLS, log hclog.Logger) (*tls.Config, error) {
	r := &certReloader{certFile: c.CertFile, keyFile: c.KeyFile, log: log, now: time.Now}
	if err := r.load(); err != nil {
		return nil, err
	}
	tc := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
	}
	if c.MinVersion == "1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	if c.ClientCAFile != "" {
		pool, err := loadCAs(c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", file)
	}
	return pool, nil
}

// certReloader serves a certificate and key pair and re-reads them when
// either file's modification time or size changes. The files are checked at
// most once a second, at handshakes: a renewed certificate is served from
// the next handshake on without a watcher goroutine or a restart, and
// connections already established keep theirs. A pair that fails to load
// (a half-written file, a key that does not match) keeps the previous pair
// and is logged once per change.
type certReloader struct {
	certFile, keyFile string
	log               hclog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     string // mtimes and sizes the loaded pair was read at
	badStamp  string // stamp of the last pair that failed to load
	checkedAt time.Time
}

func fileStamp(files ...string) (string, error) {
	var b strings.Builder
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d/%d;", st.ModTime().UnixNano(), st.Size())
	}
	return b.String(), nil
}

func (r *certReloader) load() error {
	stamp, err := fileStamp(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s: %w", r.certFile, err)
	}
	r.mu.Lock()
	r.cert, r.stamp, r.checkedAt = &cert, stamp, r.now()
	r.mu.Unlock()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checkedAt) >= time.Second {
		r.checkedAt = now
		stamp, err := fileStamp(r.certFile, r.keyFile)
		if err == nil && stamp != r.stamp && stamp != r.badStamp {
			cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
			if err != nil {
				r.badStamp = stamp
				r.log.Error("TLS certificate changed on disk but does not load; serving the previous one", "cert_file", r.certFile, "error", err)
			} else {
				r.cert, r.stamp = &cert, stamp
				r.log.Info("TLS certificate reloaded", "cert_file", r.certFile)
			}
		}
	}
	if r.cert == nil {
		return nil, errors.New("no TLS certificate loaded")
	}
	return r.cert, nil
}

// PrincipalMapper turns an mTLS client certificate's subject into a
// principal (config.ServerTLS.PrincipalMapping).
type PrincipalMapper struct {
	rules []compiledRule
}

type compiledRule struct {
	re   *regexp.Regexp
	repl string
	cas  string
}

// NewPrincipalMapper compiles the rules (validated by config).
func NewPrincipalMapper(rules []config.PrincipalRule) (*PrincipalMapper, error) {
	m := &PrincipalMapper{}
	for _, r := range rules {
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("principal_mapping pattern %q: %w", r.Pattern, err)
		}
		m.rules = append(m.rules, compiledRule{re, r.Principal, r.Case})
	}
	return m, nil
}

// Principal maps a verified client certificate: the first rule whose
// pattern matches the subject (RFC 2253 form, "CN=app,O=Example") gives
// the principal; with none, the subject itself is the principal.
func (m *PrincipalMapper) Principal(cert *x509.Certificate) string {
	subject := cert.Subject.String()
	for _, r := range m.rules {
		idx := r.re.FindStringSubmatchIndex(subject)
		if idx == nil {
			continue
		}
		p := string(r.re.ExpandString(nil, r.repl, subject, idx))
		switch r.cas {
		case "lower":
			p = strings.ToLower(p)
		case "upper":
			p = strings.ToUpper(p)
		}
		return p
	}
	return subject
}
