package proxy

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// docs/compatibility.md's per-API table is generated from the registry and
// advertisedVersions; this test fails when the doc and the code disagree.
// The broker columns are data (what each real broker answered, recorded by
// test/kafka/waitkafka and checked live by TestVersionFloorsLive); the kproxy
// and pair columns are computed here. To regenerate after a code change:
//
//	KPROXY_UPDATE_COMPAT=1 go test -run TestCompatibilityDocTable ./proxy/
//
// and to replace a broker column with a recorded ApiVersions answer, add
// KPROXY_COMPAT_BROKER=<version>=<path of apiversions.txt>[,...].
const compatDoc = "../docs/compatibility.md"

const (
	compatBegin = "<!-- BEGIN api-versions-table (generated: see proxy/compat_doc_test.go) -->"
	compatEnd   = "<!-- END api-versions-table -->"
)

func TestCompatibilityDocTable(t *testing.T) {
	raw, err := os.ReadFile(compatDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	b, e := strings.Index(doc, compatBegin), strings.Index(doc, compatEnd)
	if b < 0 || e < b {
		t.Fatalf("%s: no %q ... %q block", compatDoc, compatBegin, compatEnd)
	}
	old := doc[b+len(compatBegin) : e]
	brokers, err := parseBrokerColumns(old)
	if err != nil {
		t.Fatal(err)
	}
	if spec := os.Getenv("KPROXY_COMPAT_BROKER"); spec != "" {
		for _, kv := range strings.Split(spec, ",") {
			v, path, _ := strings.Cut(kv, "=")
			r, err := readApiVersionsFile(path)
			if err != nil {
				t.Fatal(err)
			}
			brokers[v] = r
		}
	}
	table := "\n" + compatTable(brokers)
	if table == old {
		return
	}
	if os.Getenv("KPROXY_UPDATE_COMPAT") == "1" {
		if err := os.WriteFile(compatDoc, []byte(doc[:b+len(compatBegin)]+table+doc[e:]), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the table in %s", compatDoc)
		return
	}
	t.Errorf("%s's table is out of date with the code; regenerate it with\n  KPROXY_UPDATE_COMPAT=1 go test -run TestCompatibilityDocTable ./proxy/\nwant:\n%s", compatDoc, table)
}

// compatTable renders one row per registered API: kproxy's own range, each
// broker's, and what kproxy advertises in front of each older broker paired
// with the newest one.
func compatTable(brokers map[string]map[int16]versionRange) string {
	versions := make([]string, 0, len(brokers))
	for v := range brokers {
		versions = append(versions, v)
	}
	sort.Slice(versions, func(i, j int) bool { return kafkaVersionLess(versions[i], versions[j]) })
	var pairs [][2]string
	if n := len(versions); n > 1 {
		for _, v := range versions[:n-1] {
			pairs = append(pairs, [2]string{v, versions[n-1]})
		}
	}
	var sb strings.Builder
	sb.WriteString("| API | key | kproxy |")
	for _, v := range versions {
		fmt.Fprintf(&sb, " %s |", v)
	}
	for _, p := range pairs {
		fmt.Fprintf(&sb, " %s + %s |", p[0], p[1])
	}
	sb.WriteString("\n|---|---|---|")
	sb.WriteString(strings.Repeat("---|", len(versions)+len(pairs)))
	sb.WriteString("\n")
	advertised := make([]map[int16]versionRange, len(pairs))
	for i, p := range pairs {
		advertised[i] = advertisedVersions([]map[int16]versionRange{brokers[p[0]], brokers[p[1]]})
	}
	cell := func(m map[int16]versionRange, k int16) string {
		r, ok := m[k]
		if !ok {
			return "-"
		}
		return fmt.Sprintf("%d-%d", r.min, r.max)
	}
	for _, k := range sortedKeys(registeredVersions()) {
		fmt.Fprintf(&sb, "| %s | %d | %s |", kmsg.NameForKey(k), k, cell(registeredVersions(), k))
		for _, v := range versions {
			fmt.Fprintf(&sb, " %s |", cell(brokers[v], k))
		}
		for i := range pairs {
			fmt.Fprintf(&sb, " %s |", cell(advertised[i], k))
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

func registeredVersions() map[int16]versionRange {
	out := map[int16]versionRange{}
	for k, spec := range registry {
		out[k] = versionRange{spec.min, spec.max}
	}
	return out
}

// parseBrokerColumns reads the broker columns (headers that are Kafka
// versions) of a rendered table.
func parseBrokerColumns(table string) (map[string]map[int16]versionRange, error) {
	out := map[string]map[int16]versionRange{}
	var header []string
	for _, line := range strings.Split(table, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		key, err := strconv.Atoi(cells[1])
		if err != nil {
			return nil, fmt.Errorf("bad key cell %q", cells[1])
		}
		for i := 3; i < len(cells) && i < len(header); i++ {
			if strings.Contains(header[i], "+") {
				continue // a computed pair column
			}
			if out[header[i]] == nil {
				out[header[i]] = map[int16]versionRange{}
			}
			if cells[i] == "-" {
				continue
			}
			lo, hi, ok := strings.Cut(cells[i], "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if !ok || err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad cell %q (key %d, column %s)", cells[i], key, header[i])
			}
			out[header[i]][int16(key)] = versionRange{int16(a), int16(b)}
		}
	}
	return out, nil
}

// readApiVersionsFile reads waitkafka's -apiversions output: "key min max" lines.
func readApiVersionsFile(path string) (map[int16]versionRange, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[int16]versionRange{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var k, lo, hi int16
		if _, err := fmt.Sscanf(line, "%d %d %d", &k, &lo, &hi); err != nil {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		out[k] = versionRange{lo, hi}
	}
	return out, nil
}

func kafkaVersionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

// A pair column is what a client of that pair gets: check the rendering on a
// small known case, so the doc cannot agree with a broken generator.
func TestCompatibilityTableIntersects(t *testing.T) {
	old := map[int16]versionRange{kmsg.Fetch.Int16(): {0, 12}, kmsg.Metadata.Int16(): {0, 11}}
	cur := map[int16]versionRange{kmsg.Fetch.Int16(): {4, 17}, kmsg.Metadata.Int16(): {0, 13}, kmsg.ConsumerGroupHeartbeat.Int16(): {0, 1}}
	table := compatTable(map[string]map[int16]versionRange{"2.8.2": old, "4.0.0": cur})
	for _, want := range []string{
		"| Fetch | 1 | 4-18 | 0-12 | 4-17 | 4-12 |",
		"| Metadata | 3 | 0-13 | 0-11 | 0-13 | 0-11 |",
		"| ConsumerGroupHeartbeat | 68 | 0-1 | - | 0-1 | - |",
		// ApiVersions is kproxy's own answer: its whole range, whatever the brokers.
		"| ApiVersions | 18 | 0-4 | - | - | 0-4 |",
	} {
		if !strings.Contains(table, want+"\n") {
			t.Errorf("table lacks row %q:\n%s", want, table)
		}
	}
}
