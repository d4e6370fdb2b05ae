package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The table is the registry: every row is registered once, in key order, and
// nothing is registered that the table does not list.
func TestAPITableIsTheRegistry(t *testing.T) {
	if len(registry) != len(apiTable) {
		t.Fatalf("registry has %d keys, table %d rows", len(registry), len(apiTable))
	}
	for i, row := range apiTable {
		if registry[row.key] != &apiTable[i] {
			t.Errorf("%s: registry entry is not the table row", keyName(row.key))
		}
		if i > 0 && apiTable[i-1].key >= row.key {
			t.Errorf("table out of key order at %s", keyName(row.key))
		}
		if row.route == 0 || row.handle == nil || row.min > row.max {
			t.Errorf("%s: incomplete row %+v", keyName(row.key), row)
		}
	}
}

// The dispatcher accepts every listed API at both ends of its range, and
// refuses a version past it.
func TestDispatcherAcceptsExactlyTheTableVersions(t *testing.T) {
	adv := advertisedVersions(nil)
	for _, row := range apiTable {
		req := kmsg.RequestForKey(row.key)
		for _, v := range []int16{row.min, row.max} {
			req.SetVersion(v)
			frame := appendRequest(nil, 1, kmsg.StringPtr("t"), req)
			if _, got, _, err := parseRequest(frame[4:], adv, nil, nil, false); err != nil || got.Key() != row.key {
				t.Errorf("%s v%d: %v", keyName(row.key), v, err)
			}
		}
		if row.key == kmsg.ApiVersions.Int16() || row.max >= req.MaxVersion() {
			continue
		}
		req.SetVersion(row.max + 1)
		frame := appendRequest(nil, 1, kmsg.StringPtr("t"), req)
		if _, _, _, err := parseRequest(frame[4:], adv, nil, nil, false); err == nil {
			t.Errorf("%s v%d accepted past the table's range", keyName(row.key), row.max+1)
		}
	}
}

// ApiVersions advertises the table intersected with every cluster: a key
// one cluster lacks is dropped, a narrower cluster range narrows it, and an
// API answered locally keeps kproxy's own range.
func TestApiVersionsComesFromTheTable(t *testing.T) {
	full := map[int16]versionRange{}
	for _, row := range apiTable {
		full[row.key] = versionRange{0, 100}
	}
	narrow := map[int16]versionRange{}
	for k, r := range full {
		narrow[k] = r
	}
	delete(narrow, kmsg.DescribeACLs.Int16())
	delete(narrow, kmsg.ApiVersions.Int16())
	narrow[kmsg.Fetch.Int16()] = versionRange{0, 11}
	adv := advertisedVersions([]map[int16]versionRange{full, narrow})
	for _, row := range apiTable {
		got, ok := adv[row.key]
		switch row.key {
		case kmsg.DescribeACLs.Int16():
			if ok {
				t.Errorf("DescribeACLs advertised though one cluster lacks it: %v", got)
			}
		case kmsg.Fetch.Int16():
			if got != (versionRange{row.min, 11}) {
				t.Errorf("Fetch advertised %v, want v%d-11", got, row.min)
			}
		default:
			if got != (versionRange{row.min, row.max}) {
				t.Errorf("%s advertised %v (present %v), want the table's v%d-%d", keyName(row.key), got, ok, row.min, row.max)
			}
		}
	}
	if len(adv) != len(apiTable)-1 {
		t.Errorf("%d keys advertised, want %d", len(adv), len(apiTable)-1)
	}
}

// Each handler file (NN_name.go) opens with "Name (key NN), accepted vA-B":
// the header an operator reads says what the table says.
func TestHandlerFileHeadersMatchTheTable(t *testing.T) {
	header := regexp.MustCompile(`\(key (\d+)[^)]*\), accepted v(\d+)(?:-(\d+))?`)
	for _, row := range apiTable {
		all, _ := filepath.Glob(fmt.Sprintf("%02d_*.go", row.key))
		var files []string
		for _, f := range all {
			if !strings.HasSuffix(f, "_test.go") {
				files = append(files, f)
			}
		}
		if len(files) != 1 {
			t.Errorf("%s: %d handler files %v, want one", keyName(row.key), len(files), files)
			continue
		}
		src, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		m := header.FindSubmatch(src)
		if m == nil {
			t.Errorf("%s: no \"(key N), accepted vA-B\" header", files[0])
			continue
		}
		key, _ := strconv.Atoi(string(m[1]))
		lo, _ := strconv.Atoi(string(m[2]))
		hi := lo
		if len(m[3]) > 0 {
			hi, _ = strconv.Atoi(string(m[3]))
		}
		if int16(key) != row.key || int16(lo) != row.min || int16(hi) != row.max {
			t.Errorf("%s header says key %d v%d-%d; the table says key %d v%d-%d", files[0], key, lo, hi, row.key, row.min, row.max)
		}
	}
}
