package proxy

// Shared body of AlterConfigs (33) and IncrementalAlterConfigs (44): the two
// differ only in their kmsg types. Broker resources may only name the
// cluster-wide default (""): kproxy's one virtual broker stands for every
// real broker, so altering "broker N" has no single meaning.

import (
	"github.com/twmb/franz-go/pkg/kerr"
)

// configAlteration describes one alter-configs API to alterConfigs.
type configAlteration[R, Q any] struct {
	typ     func(R) int8
	name    func(R) string
	refused func(R, int16, string) Q                 // a response resource for a refused resource
	forward func(cluster string, rs []R) ([]Q, bool) // sends a sub-request; false on failure
	key     func(Q) string                           // type + name, to merge answers
	errOf   func(*Q) (*int16, **string)              // the answer's error fields
}

const virtualBrokerAlterRefusal = "kproxy shows one virtual broker; alter a real broker's config on its cluster directly, or use the cluster-wide default (empty name)"

// alterConfigs splits resources by destination (config_resources.go),
// forwards each part and merges the answers, keeping the first error of a
// resource altered on two clusters.
func alterConfigs[R, Q any](rc *reqCtx, resources []R, a configAlteration[R, Q]) []Q {
	var out []Q
	var ok []R
	for _, r := range resources {
		if isBrokerResource(a.typ(r)) && a.name(r) != "" {
			out = append(out, a.refused(r, kerr.InvalidRequest.Code, virtualBrokerAlterRefusal))
			continue
		}
		ok = append(ok, r)
	}
	order, by := splitResources(rc, ok, a.typ, a.name, true)
	seen := map[string]int{}
	for _, c := range order {
		answers, sent := a.forward(c, by[c])
		if !sent {
			for _, r := range by[c] {
				out = append(out, a.refused(r, kerr.RequestTimedOut.Code, "upstream did not answer"))
			}
			continue
		}
		for _, q := range answers {
			mergeAnswer(&out, seen, a.key(q), q, a.errOf)
		}
	}
	return out
}
