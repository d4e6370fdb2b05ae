package proxy

// IncrementalAlterConfigs (key 44), accepted v0-1. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() { registerAnyAPI(kmsg.IncrementalAlterConfigs, 0, 1) }
