package proxy

// DeleteTopics (key 20), accepted v0-6. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() { registerAnyAPI(kmsg.DeleteTopics, 0, 6) }
