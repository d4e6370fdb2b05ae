package integration

import (
	"testing"
	"time"
)

// The consumer groups' home moves back and forth under load, four times,
// each move in the same edit as a flip of the topic, as the soak's long
// form makes them: the franz-go, librdkafka and Java groups (one member
// each) must read every record exactly once. Nothing else in make test
// moves a group more than once on real Kafka. Before the routing fix
// (TestGroupMoveKeepsTheOldHomeWhileTheDefaultResolves), each group was
// served by its new home for as long as the changed groups.default took
// to resolve, before its offsets were copied there; the Java group read
// 3 and 21 records twice in two runs of a five-move form of this test, and
// none in one run of this form: the defect shows only when a request falls in
// that window, so this test catches it often, not always. The kfake tests
// are the deterministic proof.
func TestGroupMovesBackAndForthUnderLoad(t *testing.T) {
	var steps []cutoverStep
	home := "source"
	for at := 15 * time.Second; at <= 60*time.Second; at += 15 * time.Second {
		if home == "source" {
			home = "target"
		} else {
			home = "source"
		}
		steps = append(steps, cutoverStep{at: at, produce: home, fetch: home, home: home, groups: home})
	}
	runCutoverScenario(t, "regroup", 75*time.Second, steps, scenarioOptions{transactional: true, rate: 50, txnSize: 50, maxHold: 25 * time.Second})
}
