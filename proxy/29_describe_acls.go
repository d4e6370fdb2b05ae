package proxy

// DescribeACLs (key 29), accepted v0-3. Route: any broker of the default cluster
// (KRaft brokers forward controller work themselves). Rewrites: none; the
// response names no broker.

import "github.com/twmb/franz-go/pkg/kmsg"

func init() { registerAnyAPI(kmsg.DescribeACLs, 0, 3) }
