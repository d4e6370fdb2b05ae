# bench/lib.sh — pieces the bench scripts share. Sourced from the repository's
# root (`source bench/lib.sh`); bench_lock calls the script's own say().
# shellcheck shell=bash

# free_port prints a TCP port on 127.0.0.1 that nobody listens on right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_lock WAITING: holds /tmp/kproxy-bench.lock on fd 9 until the script
# ends, since two benchmarks at once on 2 cores measure each other; says
# WAITING first when another holds it.
bench_lock() {
  exec 9>/tmp/kproxy-bench.lock
  if ! flock -n 9; then
    say "$1"
    flock 9
  fi
}

# stop_pid PID: SIGTERM to a child process still running, and wait for it to
# end; nothing when PID is empty or already gone.
stop_pid() {
  if [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

# build_before_after: builds this tree's kproxy, the kproxy at $BASE (from a
# git archive) and bench/loadgen into $WORK as kproxy-after, kproxy-before and
# loadgen, and sets LG to the loadgen. Uses the script's GO, BASE, WORK, say().
build_before_after() {
  say "building kproxy (this tree), kproxy at ${BASE:0:12} and loadgen"
  "$GO" build -o "$WORK/kproxy-after" ./cmd/kproxy
  "$GO" build -o "$WORK/loadgen" ./bench/loadgen
  mkdir "$WORK/base" && git archive "$BASE" | tar -x -C "$WORK/base"
  (cd "$WORK/base" && "$GO" build -o "$WORK/kproxy-before" ./cmd/kproxy)
  LG="$WORK/loadgen"
}

# start_before_after: starts kproxy-before and kproxy-after (build_before_after)
# side by side in front of $SOURCE, each on free ports, and waits until both
# are ready (exits, with the log, when one is not). Fills the script's
# associative arrays LISTEN and PID (declare -A LISTEN PID first) for
# "before" and "after", and adds the pids to PIDS for its cleanup.
# BEFORE_ENV and AFTER_ENV (VAR=value words) are set for the one process.
start_before_after() {
  local v admin i
  for v in before after; do
    LISTEN[$v]="127.0.0.1:$(free_port)"
    admin="127.0.0.1:$(free_port)"
    cat >"$WORK/$v.yaml" <<YAML
listen: ${LISTEN[$v]}
admin: $admin
clusters:
  source: { bootstrap: [$SOURCE] }
routes: { default: source }
log: { level: warn }
YAML
    # BEFORE_ENV / AFTER_ENV: environment for that process only, e.g.
    # AFTER_ENV=GOMAXPROCS=1 (with BASE=HEAD: the runtime setting alone).
    local envvar="${v^^}_ENV"
    # shellcheck disable=SC2086 # a list of VAR=value words
    env ${!envvar:-} "$WORK/kproxy-$v" run -c "$WORK/$v.yaml" >"$WORK/$v.log" 2>&1 &
    PID[$v]=$!
    PIDS+=("$!")
    for i in $(seq 1 100); do curl -fsS "http://$admin/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
    curl -fsS "http://$admin/readyz" >/dev/null || { cat "$WORK/$v.log" >&2; exit 1; }
  done
}
