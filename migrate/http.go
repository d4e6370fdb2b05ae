package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/kproxy/kproxy/control"
)

// HTTPAdmin speaks to kproxy's admin API at Addr (host:port, plain HTTP:
// like `kproxy status` and `kproxy plan`, for a loopback admin address).
type HTTPAdmin struct{ Addr string }

func (a HTTPAdmin) do(ctx context.Context, method, path string, body []byte, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+a.Addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, a.Addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s on %s: %s: %s", method, path, a.Addr, resp.Status, strings.TrimSpace(string(raw)))
	}
	return json.Unmarshal(raw, into)
}

// Status reads /status.
func (a HTTPAdmin) Status(ctx context.Context) (control.StatusDoc, error) {
	var d control.StatusDoc
	return d, a.do(ctx, http.MethodGet, "/status", nil, &d)
}

// Plan posts a candidate config to /plan.
func (a HTTPAdmin) Plan(ctx context.Context, candidate []byte) (control.PlanDoc, error) {
	var d control.PlanDoc
	return d, a.do(ctx, http.MethodPost, "/plan", candidate, &d)
}
