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
