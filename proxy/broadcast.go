package proxy

import "github.com/twmb/franz-go/pkg/kmsg"

// broadcast sends req to every broker of every configured cluster (ListGroups
// and ListTransactions answer per broker) and hands each answer to merge.
// A broker that fails is skipped: listing is best effort, as in kgo.
func (rc *reqCtx) broadcast(req kmsg.Request, merge func(kmsg.Response)) {
	type ans struct{ r kmsg.Response }
	var n int
	ch := make(chan ans, 16)
	for name, uc := range rc.srv().clusters {
		for id, addr := range uc.allBrokers() {
			n++
			go func() {
				r, err := rc.roundTrip(name, id, addr, req)
				if err != nil {
					rc.cc.log.Debug("broadcast to broker failed", "api", kmsg.NameForKey(req.Key()), "cluster", name, "broker", id, "error", err)
				}
				ch <- ans{r}
			}()
		}
	}
	for i := 0; i < n; i++ {
		if a := <-ch; a.r != nil {
			merge(a.r)
		}
	}
}
