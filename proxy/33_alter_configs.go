package proxy

// AlterConfigs (key 33), accepted v0-2. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() { registerAnyAPI(kmsg.AlterConfigs, 0, 2) }
