#!/usr/bin/env bash
# build.sh: build every kproxy client driver, idempotently; fails loudly.
#
#   bash test/clients/build.sh            # all
#   bash test/clients/build.sh go js      # some: go (gomatrix + kcheck), rdkafka, js, browser (Debian chromium)
#
# Outputs:
#   test/clients/bin/gomatrix    sarama | kafka-go | franz-go driver (own Go module)
#   test/clients/bin/kcheck      history checker (main module, test/checker/cmd/kcheck)
#   test/clients/bin/rdk         librdkafka driver (Debian librdkafka-dev)
#   test/clients/js/node_modules kafkajs, from package-lock.json (npm ci)
# kcat (test/clients/rdkafka/kcat.sh) and the Java tools (java/verifiable.sh)
# need no build; librdkafka-dev and kcat are apt-installed when missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$here/bin"
mkdir -p "$bin"

say() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(go rdkafka js browser)

apt_need() {
	local missing=()
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	say "installing ${missing[*]}"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
}

build_go() {
	command -v go >/dev/null || die "go is not on PATH"
	say "gomatrix"
	(cd "$here/gomatrix" && go build -o "$bin/gomatrix" .) || die "gomatrix build failed"
	say "kcheck"
	(cd "$root" && go build -o "$bin/kcheck" ./test/checker/cmd/kcheck) || die "kcheck build failed"
}

build_rdkafka() {
	apt_need librdkafka-dev kcat
	command -v cc >/dev/null || apt_need gcc
	say "rdk (librdkafka $(dpkg-query -W -f='${Version}' librdkafka-dev))"
	bash "$here/rdkafka/build.sh" || die "rdk build failed"
	cp "$here/rdkafka/rdk" "$bin/rdk"
}

build_js() {
	command -v node >/dev/null || die "node is not on PATH"
	command -v npm >/dev/null || die "npm is not on PATH"
	local lock="$here/js/package-lock.json" installed="$here/js/node_modules/.package-lock.json"
	if [ -f "$installed" ] && [ -d "$here/js/node_modules/kafkajs" ] && [ "$installed" -nt "$lock" ]; then
		say "js: node_modules up to date"
	else
		say "js: npm ci"
		(cd "$here/js" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed"
	fi
	node -e 'require(process.argv[1])' "$here/js/node_modules/kafkajs" || die "kafkajs does not load"
}

# The status page test (test/integration/web_test.go) drives headless Chromium.
build_browser() {
	apt_need chromium
}

for p in "${parts[@]}"; do
	case "$p" in
	go) build_go ;;
	rdkafka | rdk) build_rdkafka ;;
	js | kafkajs) build_js ;;
	browser | chromium) build_browser ;;
	*) die "unknown part $p (go, rdkafka, js, browser)" ;;
	esac
done
say "ok"
