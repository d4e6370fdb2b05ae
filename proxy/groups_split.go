package proxy

// Requests that name several groups (batched DescribeGroups, DeleteGroups,
// ConsumerGroupDescribe) or transactional ids (DescribeTransactions): one
// sub-request per key, each to its own coordinator, in parallel, merged in
// request order. Keys are few per request, so one request per key keeps the
// code obvious. Every key is answered: one whose coordinator gave no answer
// gets COORDINATOR_NOT_AVAILABLE, which clients retry.

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// perKey describes one such API. kmsg gives each its own structs; the
// list and key fields are named here and read by name, in this file only,
// so one function serves the four.
type perKey struct {
	keys     string                                            // the request's list of keys ("Groups")
	answers  string                                            // the response's list of answers ("Groups")
	keyField string                                            // the answer's field naming its key ("Group")
	typ      int8                                              // coordGroup or coordTxn
	cluster  func(rc *reqCtx, key string) string               // the cluster whose coordinator answers for key
	fix      func(rc *reqCtx, cluster string, a reflect.Value) // optional: rewrites an answer (ids)
}

var groupKeys = perKey{keys: "Groups", answers: "Groups", keyField: "Group", typ: coordGroup,
	cluster: func(rc *reqCtx, g string) string { return rc.srv().routes().GroupCluster(g) }}

// forwardPerKey serves req per key, as described by pk.
func (rc *reqCtx) forwardPerKey(req kmsg.Request, pk perKey) func() kmsg.Response {
	return func() kmsg.Response {
		reqV := reflect.ValueOf(req).Elem()
		keys := reqV.FieldByName(pk.keys).Interface().([]string)
		resp := req.ResponseKind()
		out := reflect.ValueOf(resp).Elem().FieldByName(pk.answers)
		got := make([]reflect.Value, len(keys))
		done := make(chan struct{}, len(keys))
		for i, k := range keys {
			go func() {
				defer func() { done <- struct{}{} }()
				sub := reflect.New(reqV.Type())
				sub.Elem().Set(reqV)
				sub.Elem().FieldByName(pk.keys).Set(reflect.ValueOf(keys[i : i+1]))
				cluster := pk.cluster(rc, k)
				r := rc.forwardCoordinator(cluster, pk.typ, k, sub.Interface().(kmsg.Request))
				if r == nil || reflect.TypeOf(r) != reflect.TypeOf(resp) {
					return
				}
				as := reflect.ValueOf(r).Elem().FieldByName(pk.answers)
				if as.Len() == 0 {
					return
				}
				if pk.fix != nil {
					for j := 0; j < as.Len(); j++ {
						pk.fix(rc, cluster, as.Index(j))
					}
				}
				got[i] = as
			}()
		}
		for range keys {
			<-done
		}
		for i, k := range keys {
			if got[i].IsValid() {
				out.Set(reflect.AppendSlice(out, got[i]))
				continue
			}
			a := reflect.New(out.Type().Elem()).Elem()
			a.FieldByName(pk.keyField).SetString(k)
			a.FieldByName("ErrorCode").SetInt(int64(kerr.CoordinatorNotAvailable.Code))
			out.Set(reflect.Append(out, a))
		}
		return resp
	}
}
