// Package secure turns the security sections of a kproxy config into the
// objects the rest of kproxy uses: server-side TLS with certificates
// reloaded from disk and the principal of an mTLS client (server_tls.go),
// the users file SASL clients authenticate against (users.go, sasl.go), and
// the TLS and SASL settings of kproxy's own upstream connections
// (client.go). The proxy's data-path connections, its metadata client, the
// replicator and the control plane all take their upstream settings from
// Upstream, so the three can never disagree about how to reach a cluster.
//
// Secrets (passwords, private keys) are read from files or environment
// variables named in the config; nothing here logs or formats them.
package secure
