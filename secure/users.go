package secure

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/xdg-go/scram"
	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/config"
)

// UsersFile is the users file format (config.ServerSASL.UsersFile):
//
//	users:
//	  alice:
//	    SCRAM-SHA-512: {salt: <base64>, iterations: 8192, stored_key: <base64>, server_key: <base64>}
//	    SCRAM-SHA-256: {...}
//
// An entry holds the salted SCRAM credential (RFC 5802 StoredKey and
// ServerKey), never the password: the file is as sensitive as a broker's
// SCRAM credentials, not as a password list. A user may authenticate with
// a SCRAM mechanism it has an entry for, and with PLAIN when it has any
// entry (the password is checked by deriving the entry's StoredKey).
type UsersFile struct {
	Users map[string]map[string]ScramEntry `yaml:"users"`
}

// ScramEntry is one salted SCRAM credential.
type ScramEntry struct {
	Salt       string `yaml:"salt"` // base64
	Iterations int    `yaml:"iterations"`
	StoredKey  string `yaml:"stored_key"` // base64
	ServerKey  string `yaml:"server_key"` // base64
}

// MinIterations is the fewest PBKDF2 iterations an entry may use (RFC 7677
// recommends 4096 at least).
const MinIterations = 4096

func hashFor(mech string) (scram.HashGeneratorFcn, bool) {
	switch mech {
	case config.MechScramSHA256:
		return scram.HashGeneratorFcn(sha256.New), true
	case config.MechScramSHA512:
		return scram.HashGeneratorFcn(sha512.New), true
	}
	return nil, false
}

// NewScramEntry derives a credential for password with a fresh random salt.
func NewScramEntry(mech, password string, iterations int) (ScramEntry, error) {
	h, ok := hashFor(mech)
	if !ok {
		return ScramEntry{}, fmt.Errorf("not a SCRAM mechanism: %q", mech)
	}
	salt := make([]byte, 24)
	if _, err := rand.Read(salt); err != nil {
		return ScramEntry{}, err
	}
	cl, err := h.NewClient("", password, "")
	if err != nil {
		return ScramEntry{}, err
	}
	sc, err := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	if err != nil {
		return ScramEntry{}, err
	}
	return ScramEntry{
		Salt:       base64.StdEncoding.EncodeToString(salt),
		Iterations: iterations,
		StoredKey:  base64.StdEncoding.EncodeToString(sc.StoredKey),
		ServerKey:  base64.StdEncoding.EncodeToString(sc.ServerKey),
	}, nil
}

func (e ScramEntry) credentials() (scram.StoredCredentials, error) {
	salt, err1 := base64.StdEncoding.DecodeString(e.Salt)
	sk, err2 := base64.StdEncoding.DecodeString(e.StoredKey)
	svk, err3 := base64.StdEncoding.DecodeString(e.ServerKey)
	if err := errors.Join(err1, err2, err3); err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("bad base64: %w", err)
	}
	if e.Iterations < MinIterations || len(salt) == 0 || len(sk) == 0 || len(svk) == 0 {
		return scram.StoredCredentials{}, fmt.Errorf("incomplete entry (salt, stored_key, server_key and iterations >= %d are required)", MinIterations)
	}
	return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: e.Iterations}, StoredKey: sk, ServerKey: svk}, nil
}

// users is one parsed users file.
type users map[string]map[string]scram.StoredCredentials

func parseUsers(data []byte) (users, error) {
	var f UsersFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	out := users{}
	for name, mechs := range f.Users {
		out[name] = map[string]scram.StoredCredentials{}
		for mech, e := range mechs {
			if _, ok := hashFor(mech); !ok {
				return nil, fmt.Errorf("user %q: unknown mechanism %q (want SCRAM-SHA-256 or SCRAM-SHA-512)", name, mech)
			}
			sc, err := e.credentials()
			if err != nil {
				return nil, fmt.Errorf("user %q %s: %w", name, mech, err)
			}
			out[name][mech] = sc
		}
	}
	return out, nil
}

// UserStore is a users file, re-read when it changes on disk (checked at
// most once a second, when a client authenticates). A file that stops
// parsing keeps the previous users and is logged once per change.
type UserStore struct {
	path string
	log  hclog.Logger
	now  func() time.Time

	mu        sync.Mutex
	users     users
	stamp     string
	badStamp  string
	checkedAt time.Time
}

// OpenUserStore loads path; a file that does not load is an error.
func OpenUserStore(path string, log hclog.Logger) (*UserStore, error) {
	s := &UserStore{path: path, log: log, now: time.Now}
	stamp, err := fileStamp(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	u, err := parseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	s.users, s.stamp, s.checkedAt = u, stamp, s.now()
	return s, nil
}

func (s *UserStore) current() users {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.checkedAt) < time.Second {
		return s.users
	}
	s.checkedAt = now
	stamp, err := fileStamp(s.path)
	if err != nil || stamp == s.stamp || stamp == s.badStamp {
		return s.users
	}
	data, err := os.ReadFile(s.path)
	if err == nil {
		var u users
		if u, err = parseUsers(data); err == nil {
			s.users, s.stamp = u, stamp
			s.log.Info("users file reloaded", "path", s.path, "users", len(u))
			return s.users
		}
	}
	s.badStamp = stamp
	s.log.Error("users file changed but does not load; keeping the previous users", "path", s.path, "error", err)
	return s.users
}

// lookup returns the credential of user for a SCRAM mechanism.
func (s *UserStore) lookup(mech, user string) (scram.StoredCredentials, bool) {
	sc, ok := s.current()[user][mech]
	return sc, ok
}

// checkPlain reports whether password is user's, by deriving the StoredKey
// of one of its SCRAM entries and comparing in constant time.
func (s *UserStore) checkPlain(user, password string) bool {
	entries := s.current()[user]
	for _, mech := range []string{config.MechScramSHA512, config.MechScramSHA256} {
		sc, ok := entries[mech]
		if !ok {
			continue
		}
		h, _ := hashFor(mech)
		cl, err := h.NewClient(user, password, "")
		if err != nil {
			return false
		}
		got, err := cl.GetStoredCredentialsWithError(sc.KeyFactors)
		return err == nil && subtle.ConstantTimeCompare(got.StoredKey, sc.StoredKey) == 1
	}
	return false
}

// MarshalUsers builds a users file giving each user (name -> password)
// SCRAM-SHA-256 and SCRAM-SHA-512 entries with fresh salts; the passwords
// themselves are not in it. Tests and tools use it.
func MarshalUsers(passwords map[string]string, iterations int) ([]byte, error) {
	f := UsersFile{Users: map[string]map[string]ScramEntry{}}
	for name, pass := range passwords {
		f.Users[name] = map[string]ScramEntry{}
		for _, mech := range []string{config.MechScramSHA256, config.MechScramSHA512} {
			e, err := NewScramEntry(mech, pass, iterations)
			if err != nil {
				return nil, err
			}
			f.Users[name][mech] = e
		}
	}
	return yaml.Marshal(f)
}

// SetUser returns the users file data with name's entries replaced by
// fresh SCRAM-SHA-256 and SCRAM-SHA-512 credentials for password (data may
// be empty: a new file). Other users are kept as they are.
func SetUser(data []byte, name, password string, iterations int) ([]byte, error) {
	if name == "" || password == "" {
		return nil, errors.New("user name and password must not be empty")
	}
	if iterations < MinIterations {
		return nil, fmt.Errorf("iterations must be at least %d", MinIterations)
	}
	var f UsersFile
	if len(bytes.TrimSpace(data)) > 0 {
		if _, err := parseUsers(data); err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(data, &f); err != nil {
			return nil, err
		}
	}
	if f.Users == nil {
		f.Users = map[string]map[string]ScramEntry{}
	}
	f.Users[name] = map[string]ScramEntry{}
	for _, mech := range []string{config.MechScramSHA256, config.MechScramSHA512} {
		e, err := NewScramEntry(mech, password, iterations)
		if err != nil {
			return nil, err
		}
		f.Users[name][mech] = e
	}
	return yaml.Marshal(f)
}
