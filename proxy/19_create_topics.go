package proxy

// CreateTopics (key 19), accepted v0-7. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() { registerAnyAPI(kmsg.CreateTopics, 0, 7) }
