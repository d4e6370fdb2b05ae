package integration

import (
	"testing"
	"time"
)

// The polling helpers of the integration tests: each wait is a bound on how
// long a test may take, never a timing assertion.

// poll checks cond every interval until it holds (true) or within has
// passed (false).
func poll(within, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}

// waitFor fails the test when cond does not hold within 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(30*time.Second, 100*time.Millisecond, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}
