package control

import (
	"encoding/json"
	"net/http"

	"github.com/kproxy/kproxy/proxy"
)

// ClientsDoc is the /clients document: the proxy's client inventory.
type ClientsDoc struct {
	Clients []proxy.ClientInfo `json:"clients"`
}

// Clients is the client inventory (proxy/inventory.go).
func (inst *Instance) Clients() []proxy.ClientInfo { return inst.srv.Clients() }

func (inst *Instance) serveClients(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(ClientsDoc{Clients: inst.Clients()})
}
