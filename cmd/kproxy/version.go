package main

import (
	"fmt"
	"runtime/debug"
)

// version and commit may be set at link time, for builds made outside a
// git checkout (a source tarball, a distro package):
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=0123abc" ./cmd/kproxy
//
// Left empty, they come from the build info Go records: the module version
// (for `go install ...@vX`) and the vcs.revision of the checkout.
var version, commit string

// versionLine is what `kproxy --version` prints.
func versionLine() string {
	info, _ := debug.ReadBuildInfo()
	return formatVersion(version, commit, info)
}

func formatVersion(version, commit string, info *debug.BuildInfo) string {
	modified, when := false, ""
	goVersion := "unknown"
	if info != nil {
		goVersion = info.GoVersion
		if version == "" && info.Main.Version != "" {
			version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if commit == "" {
					commit = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			case "vcs.time":
				when = s.Value
			}
		}
	}
	if version == "" {
		version = "(devel)"
	}
	if commit == "" {
		commit = "unknown"
	} else if len(commit) > 12 {
		commit = commit[:12]
	}
	if modified {
		commit += "-dirty"
	}
	s := fmt.Sprintf("kproxy %s, commit %s", version, commit)
	if when != "" {
		s += ", " + when
	}
	return s + ", " + goVersion
}
