package proxy

// Requests split by cluster: each requested item (a topic, a config
// resource, a group's topic) goes to the cluster(s) that hold it, one
// sub-request per cluster, all at once, and the answers are merged so that
// every requested item is answered. A cluster that did not answer gives its
// items REQUEST_TIMED_OUT (retriable: the client asks again); an answer
// that left an item out gives it UNKNOWN_SERVER_ERROR. An item sent to two
// clusters (a topic whose produce and fetch routes differ) is answered once,
// with the first error either cluster reported. Answers come in request
// order. Users: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
// AlterConfigs, IncrementalAlterConfigs, and OffsetCommit/OffsetFetch for
// groups whose topics live on both clusters (group_offsets.go).

import (
	"reflect"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// clusterSplit describes one split request: I is a requested item, A the
// answer for one item.
type clusterSplit[I, A any] struct {
	clusters  func(I) []string                                  // where an item goes: one cluster, or two
	send      func(cluster string, part []I) ([]A, int32, bool) // one sub-request: answers, throttle, and false when there was no usable answer
	itemKey   func(I) string
	answerKey func(A) string
	failed    func(item I, code int16, msg string) A // the answer for an item its cluster did not answer
	errOf     func(*A) (*int16, **string)            // an answer's error fields; needed when clusters can name two
	complete  func(I, *A)                            // optional: answers what an answer left out inside an item (partitions)
}

const (
	msgNoAnswer = "kproxy: the upstream cluster did not answer; retry"
	msgOmitted  = "kproxy: the upstream answer left this out"
)

// splitByCluster sends each cluster its part of items and returns one
// answer per distinct item, in request order, and the largest throttle.
func splitByCluster[I, A any](items []I, s clusterSplit[I, A]) ([]A, int32) {
	dest := make([][]string, len(items))
	var order []string
	by := map[string][]I{}
	for i, it := range items {
		dest[i] = s.clusters(it)
		for _, c := range dest[i] {
			if _, ok := by[c]; !ok {
				order = append(order, c)
			}
			by[c] = append(by[c], it)
		}
	}
	type part struct {
		answers  map[string]A // by answerKey; the first answer for a key
		throttle int32
		ok       bool
	}
	parts := make([]part, len(order))
	at := make(map[string]*part, len(order))
	var wg sync.WaitGroup
	for i, c := range order {
		at[c] = &parts[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, throttle, ok := s.send(c, by[c])
			p := part{answers: make(map[string]A, len(got)), throttle: throttle, ok: ok}
			for _, a := range got {
				if k := s.answerKey(a); !hasKey(p.answers, k) {
					p.answers[k] = a
				}
			}
			parts[i] = p
		}()
	}
	wg.Wait()

	var throttle int32
	for _, p := range parts {
		throttle = max(throttle, p.throttle)
	}
	out := make([]A, 0, len(items))
	done := map[string]bool{}
	for i, it := range items {
		k := s.itemKey(it)
		if done[k] {
			continue
		}
		done[k] = true
		var merged *A
		for _, c := range dest[i] {
			p := at[c]
			a, found := p.answers[k]
			switch {
			case !p.ok:
				a = s.failed(it, kerr.RequestTimedOut.Code, msgNoAnswer)
			case !found:
				a = s.failed(it, kerr.UnknownServerError.Code, msgOmitted)
			case s.complete != nil:
				s.complete(it, &a)
			}
			if merged == nil {
				merged = &a
				continue
			}
			code, msg := s.errOf(merged)
			if ac, am := s.errOf(&a); *code == 0 {
				*code, *msg = *ac, *am
			}
		}
		if merged != nil {
			out = append(out, *merged)
		}
	}
	return out, throttle
}

func hasKey[A any](m map[string]A, k string) bool { _, ok := m[k]; return ok }

// listSplit serves a request whose one list field (Topics, Resources) is
// split by cluster through splitByCluster, for APIs whose entries are named
// by the same fields in the request and the answer, and whose answers carry
// ErrorCode and ErrorMessage: CreateTopics, CreatePartitions, AlterConfigs,
// IncrementalAlterConfigs. kmsg gives each API its own structs with these
// same field names; they are read by name, here only, so one function
// serves the four instead of four copies differing in their types.
type listSplit struct {
	list     string                                     // the list field, in the request and the response
	keys     []string                                   // the fields that name an entry
	clusters func(entry reflect.Value) []string         // where an entry goes
	refuse   func(entry reflect.Value) (int16, string)  // optional: a nonzero code refuses an entry before sending
	fix      func(cluster string, answer reflect.Value) // optional: rewrites an answer entry from cluster (topic ids)
}

func (rc *reqCtx) forwardListSplit(req kmsg.Request, l listSplit) kmsg.Response {
	resp := req.ResponseKind()
	reqV := reflect.ValueOf(req).Elem()
	entries := reqV.FieldByName(l.list)
	answers := reflect.ValueOf(resp).Elem().FieldByName(l.list)
	answerType := answers.Type().Elem()
	failed := func(e reflect.Value, code int16, msg string) reflect.Value {
		a := reflect.New(answerType).Elem()
		for _, f := range l.keys {
			a.FieldByName(f).Set(e.FieldByName(f))
		}
		a.FieldByName("ErrorCode").SetInt(int64(code))
		a.FieldByName("ErrorMessage").Set(reflect.ValueOf(kmsg.StringPtr(msg)))
		return a
	}
	key := func(e reflect.Value) string {
		k := ""
		for _, f := range l.keys {
			k += "\x00" + keyString(e.FieldByName(f))
		}
		return k
	}
	var items []reflect.Value
	for i := 0; i < entries.Len(); i++ {
		e := entries.Index(i)
		if l.refuse != nil {
			if code, msg := l.refuse(e); code != 0 {
				answers.Set(reflect.Append(answers, failed(e, code, msg)))
				continue
			}
		}
		items = append(items, e)
	}
	got, throttle := splitByCluster(items, clusterSplit[reflect.Value, reflect.Value]{
		clusters: l.clusters,
		send: func(c string, part []reflect.Value) ([]reflect.Value, int32, bool) {
			sub := reflect.New(reqV.Type())
			sub.Elem().Set(reqV)
			list := reflect.MakeSlice(entries.Type(), 0, len(part))
			sub.Elem().FieldByName(l.list).Set(reflect.Append(list, part...))
			r := rc.forwardAny(c, sub.Interface().(kmsg.Request))
			if r == nil || reflect.TypeOf(r) != reflect.TypeOf(resp) {
				return nil, 0, false
			}
			rv := reflect.ValueOf(r).Elem()
			as := rv.FieldByName(l.list)
			out := make([]reflect.Value, as.Len())
			for i := range out {
				out[i] = as.Index(i)
				if l.fix != nil {
					l.fix(c, out[i])
				}
			}
			return out, int32(rv.FieldByName("ThrottleMillis").Int()), true
		},
		itemKey:   key,
		answerKey: key,
		failed:    failed,
		errOf: func(a *reflect.Value) (*int16, **string) {
			return a.FieldByName("ErrorCode").Addr().Interface().(*int16), a.FieldByName("ErrorMessage").Addr().Interface().(**string)
		},
	})
	answers.Set(reflect.Append(answers, got...))
	reflect.ValueOf(resp).Elem().FieldByName("ThrottleMillis").SetInt(int64(throttle))
	return resp
}

// keyString renders one naming field (a string, or a resource type).
func keyString(v reflect.Value) string {
	if v.Kind() == reflect.String {
		return v.String()
	}
	return strconv.FormatInt(v.Int(), 10)
}
