#!/usr/bin/env bash
# kafka.sh: real Apache Kafka brokers for kproxy's tests, built from Maven Central jars.
#
# Two single-node clusters on loopback, each at any supported version:
#   source  KAFKA_SOURCE_VERSION (3.9.2)  broker 127.0.0.1:19092  controller/ZooKeeper 127.0.0.1:19093
#   target  KAFKA_TARGET_VERSION (4.4.0)  broker 127.0.0.1:29092  controller/ZooKeeper 127.0.0.1:29093
# Kafka 3.3+ runs in KRaft combined mode (broker+controller in one JVM). Older versions
# (2.8.x, 3.0-3.2, where KRaft was not production-ready) run in ZooKeeper mode: a
# ZooKeeper from the same classpath (Maven resolves it with kafka_2.13) listens on the
# controller port, with its data dir inside the cluster's run dir (wiped by every `up`).
#
# With KAFKA_SECURE=1, each KRaft cluster of 3.5+ also gets a SASL_SSL listener on its broker
# port + 2 (19094, 29094 by default; KAFKA_{SOURCE,TARGET}_SECURE_PORT), beside the plaintext
# one: TLS with a throwaway CA and broker certificate that test/kafka/kafkasecrets makes with
# Go's crypto at every `up`, SASL SCRAM-SHA-256 and SCRAM-SHA-512 (user "kproxy", created at
# format time with --add-scram) and PLAIN (the same user, from the listener's JAAS line). The
# CA, the keys and the password live only in $KAFKA_RUN_DIR/secure (never committed); `env`
# exports where. ZooKeeper-mode clusters (2.8.x, 3.0-3.2) and KRaft before 3.5 (no --add-scram)
# stay plaintext-only, with a warning.
#
# Subcommands:
#   fetch       resolve the source, target and tools classpaths into $KPROXY_CACHE (idempotent)
#   fetch-mm2   resolve the MirrorMaker 2 classpath (only the benchmark needs it)
#   up          format fresh storage, start both clusters, wait until each answers Metadata
#   down        stop both clusters (SIGTERM, 20 s, then SIGKILL); logs are kept
#   restart-source  stop the source broker and start it again on its data (tests of a restart)
#   kill NAME   SIGKILL the broker of cluster NAME (source|target): a crash, no clean shutdown
#   start NAME  start NAME's broker again on its data (after kill) and wait until it serves
#   status      which brokers run
#   logs [N]    last N (default 50) lines of each broker log
#   env         shell exports for tests: eval "$(test/kafka/kafka.sh env)"
#   tools-cp    the classpath of org.apache.kafka.tools.* (VerifiableProducer, ...)
#   mm2-cp      the classpath of org.apache.kafka.connect.mirror.MirrorMaker
#   fetch-brokers, fetch-tools   the two halves of fetch (up runs fetch-brokers itself)
#
# Environment (defaults below): KPROXY_CACHE, KAFKA_{SOURCE,TARGET,TOOLS,MM2}_VERSION,
# KAFKA_HEAP_OPTS, KAFKA_WAIT_SECONDS, KAFKA_{SOURCE,TARGET}_FORMAT_ARGS,
# KAFKA_{SOURCE,TARGET}_{BROKER,CONTROLLER,FAULT,FAULT_ADVERTISED}_PORT, KPROXY_M2_REPO (Maven local repository),
# KAFKA_RUN_DIR (default $KPROXY_CACHE/kafka-run), KAFKA_ZK_HEAP_OPTS.
#
# Needs only java (17+), mvn and go on PATH. Maven Central is the only network access.
# Cache layout ($KPROXY_CACHE, default <repo>/.cache, git-ignored):
#   kafka/<name>-<version>/libs/*.jar   one directory per classpath; .complete = hash of its pom
#   kafka/mvn-logs/                     Maven output of the last resolution of each classpath
#   kafka-run/{source,target}/          server.properties, log config, data/, server.log, console.log, kafka.pid,
#                                       apiversions.txt (the broker's ApiVersions: "key min max" lines)
#                                       (ZooKeeper mode also: zookeeper.properties, zookeeper/, zookeeper.log, zk.pid)
#   kafka-run/bin/{waitkafka,kafkasecrets}  the Go readiness checker and the secrets maker,
#                                       built from this checkout (per run dir: lanes share the jars)
#   kafka-run/secure/                   KAFKA_SECURE=1: ca.pem, broker.pem, kproxy.password (0600)
set -euo pipefail

# ---- versions (override through the environment) ---------------------------------------
KAFKA_SOURCE_VERSION="${KAFKA_SOURCE_VERSION:-3.9.2}"
KAFKA_TARGET_VERSION="${KAFKA_TARGET_VERSION:-4.4.0}"
# Tools and MirrorMaker 2 are plain Kafka clients. kafka-tools and connect-mirror 4.4.0 are
# not on Maven Central (neither is kafka-tools-api, connect-runtime or kafka-streams 4.4.0;
# only the broker-side modules are), so they default to the newest release that is. Set them
# to 4.4.0 once it is published; fetch fails loudly, it never falls back on its own.
KAFKA_TOOLS_VERSION="${KAFKA_TOOLS_VERSION:-4.3.1}"
KAFKA_MM2_VERSION="${KAFKA_MM2_VERSION:-4.3.1}"
SCALA_BINARY="${SCALA_BINARY:-2.13}"
# Logging: Kafka 3.9 uses slf4j 1.7 + reload4j; Kafka 4.x uses slf4j 1.7 + log4j2 (KIP-653).
SLF4J_VERSION="${SLF4J_VERSION:-1.7.36}"
RELOAD4J_VERSION="${RELOAD4J_VERSION:-1.2.25}"
LOG4J2_VERSION="${LOG4J2_VERSION:-2.25.5}"
MVN_DEPENDENCY_PLUGIN="${MVN_DEPENDENCY_PLUGIN:-org.apache.maven.plugins:maven-dependency-plugin:3.8.1}"
# Broker-side exclusions, "groupId:artifactId" separated by spaces. kafka_2.13:4.4.0 declares
# kafka-tools-api:4.4.0 (Decoder/RecordReader interfaces for the command-line tools), which
# Maven Central does not have; no class in the 4.4.0 broker jars references
# org.apache.kafka.tools.api, so the broker and StorageTool run without it. The default
# excludes it for every 4.x broker, on whichever side (the downgrade pair runs 4.4.0 as source).
default_excludes() { (("${1%%.*}" >= 4)) && echo "org.apache.kafka:kafka-tools-api" || true; }
KAFKA_TARGET_EXCLUDES="${KAFKA_TARGET_EXCLUDES-$(default_excludes "$KAFKA_TARGET_VERSION")}"
KAFKA_SOURCE_EXCLUDES="${KAFKA_SOURCE_EXCLUDES-$(default_excludes "$KAFKA_SOURCE_VERSION")}"

# ---- layout and runtime knobs ---------------------------------------------------------
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
KPROXY_CACHE="${KPROXY_CACHE:-$REPO_ROOT/.cache}"
DIST_DIR="$KPROXY_CACHE/kafka"
# KAFKA_RUN_DIR: where the clusters' data and logs live; a second pair run after the first
# (test/matrix.sh) uses its own, so the first pair's logs survive.
RUN_DIR="${KAFKA_RUN_DIR:-$KPROXY_CACHE/kafka-run}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx384m}"
KAFKA_ZK_HEAP_OPTS="${KAFKA_ZK_HEAP_OPTS:--Xms32m -Xmx128m}"
# Bound on broker startup, counted after formatting. On an idle 2-core machine both brokers
# are up ~10 s after `up` begins; with a load average of 15 (parallel builds) it took 20-60 s.
KAFKA_WAIT_SECONDS="${KAFKA_WAIT_SECONDS:-120}"
KAFKA_STOP_SECONDS="${KAFKA_STOP_SECONDS:-20}"
# Extra arguments for `StorageTool format`, e.g. "--feature transaction.version=2".
KAFKA_SOURCE_FORMAT_ARGS="${KAFKA_SOURCE_FORMAT_ARGS:-}"
KAFKA_TARGET_FORMAT_ARGS="${KAFKA_TARGET_FORMAT_ARGS:-}"
# Set to 1 to skip the Go Metadata/produce/consume check after start (log line + TCP only).
KAFKA_SKIP_GO_CHECK="${KAFKA_SKIP_GO_CHECK:-0}"

# Fixed loopback ports; override only to run a second harness beside this one, and then
# pick ports below 32768 (outside Linux's ephemeral range, where a client socket can hold them).
SOURCE_BROKER_PORT="${KAFKA_SOURCE_BROKER_PORT:-19092}"
SOURCE_CONTROLLER_PORT="${KAFKA_SOURCE_CONTROLLER_PORT:-19093}"
TARGET_BROKER_PORT="${KAFKA_TARGET_BROKER_PORT:-29092}"
TARGET_CONTROLLER_PORT="${KAFKA_TARGET_CONTROLLER_PORT:-29093}"
# A second listener per broker for the fault tests (test/faults): the broker listens on
# FAULT_PORT and advertises FAULT_ADVERTISED_PORT there, where a test runs its fault proxy
# forwarding to FAULT_PORT. A client bootstrapped on the fault proxy learns the fault proxy's
# address from Metadata (Kafka answers with the addresses of the listener a request came in
# on), so all its traffic passes the faults; the PLAINTEXT listener is unaffected.
SOURCE_FAULT_PORT="${KAFKA_SOURCE_FAULT_PORT:-$((SOURCE_BROKER_PORT + 4))}"
SOURCE_FAULT_ADVERTISED_PORT="${KAFKA_SOURCE_FAULT_ADVERTISED_PORT:-$((SOURCE_BROKER_PORT + 5))}"
TARGET_FAULT_PORT="${KAFKA_TARGET_FAULT_PORT:-$((TARGET_BROKER_PORT + 4))}"
TARGET_FAULT_ADVERTISED_PORT="${KAFKA_TARGET_FAULT_ADVERTISED_PORT:-$((TARGET_BROKER_PORT + 5))}"

# KAFKA_SECURE=1: a SASL_SSL listener beside the plaintext one (see the top of this file).
KAFKA_SECURE="${KAFKA_SECURE:-0}"
SOURCE_SECURE_PORT="${KAFKA_SOURCE_SECURE_PORT:-$((SOURCE_BROKER_PORT + 2))}"
TARGET_SECURE_PORT="${KAFKA_TARGET_SECURE_PORT:-$((TARGET_BROKER_PORT + 2))}"
SECURE_DIR="$RUN_DIR/secure"
BIN_DIR="$RUN_DIR/bin"

SOURCE_CP_DIR="$DIST_DIR/broker-$KAFKA_SOURCE_VERSION"
TARGET_CP_DIR="$DIST_DIR/broker-$KAFKA_TARGET_VERSION"
TOOLS_CP_DIR="$DIST_DIR/tools-$KAFKA_TOOLS_VERSION"
MM2_CP_DIR="$DIST_DIR/mm2-$KAFKA_MM2_VERSION"

say() { echo "kafka.sh: $*" >&2; }
die() { echo "kafka.sh: error: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH ($2)"
}

# major version of a Kafka version string: 3.9.2 -> 3
kmajor() { echo "${1%%.*}"; }
kminor() { local r="${1#*.}"; echo "${r%%.*}"; }

# zk_mode VERSION: true for versions that run on ZooKeeper here (before 3.3, KRaft was
# early access). 2.x and 3.0-3.2; 4.x has no ZooKeeper mode at all.
zk_mode() {
  local ma mi
  ma="$(kmajor "$1")" mi="$(kminor "$1")"
  ((ma < 3 || (ma == 3 && mi < 3)))
}

# secure_on VERSION: this cluster gets the SASL_SSL listener (KAFKA_SECURE=1, KRaft, 3.5+ for
# StorageTool --add-scram).
secure_on() {
  [[ "$KAFKA_SECURE" == 1 ]] || return 1
  zk_mode "$1" && return 1
  local ma mi
  ma="$(kmajor "$1")" mi="$(kminor "$1")"
  ((ma > 3 || (ma == 3 && mi >= 5)))
}

# ---- fetch --------------------------------------------------------------------------------

# dep_xml GROUP:ARTIFACT:VERSION [EXCLUDE_G:A ...]
dep_xml() {
  local gav="$1"; shift
  local g a v
  IFS=: read -r g a v <<<"$gav"
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version>' "$g" "$a" "$v"
  if (($# > 0)); then
    printf '\n      <exclusions>'
    local ex eg ea
    for ex in "$@"; do
      IFS=: read -r eg ea <<<"$ex"
      printf '<exclusion><groupId>%s</groupId><artifactId>%s</artifactId></exclusion>' "$eg" "$ea"
    done
    printf '</exclusions>\n    '
  fi
  printf '</dependency>\n'
}

# write_pom NAME DEPS_XML > pom.xml
write_pom() {
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by test/kafka/kafka.sh; resolves one classpath with dependency:copy-dependencies -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kproxy.test</groupId>
  <artifactId>kproxy-kafka-$1</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
$2  </dependencies>
</project>
EOF
}

# fetch_cp NAME DIR MAIN_JAR DEPS_XML [EXTRA_FILE_FN]
# Resolves DEPS_XML into DIR/libs unless DIR/.complete holds the hash of the same pom.
# MAIN_JAR must appear in libs afterwards (guards against an empty or wrong resolution).
fetch_cp() {
  local name="$1" dir="$2" main_jar="$3" deps="$4" extra="${5:-}"
  local pom hash
  lock_dist
  pom="$(write_pom "$name" "$deps")"
  hash="$( { printf '%s\n' "$pom"; [[ -n "$extra" ]] && "$extra" /dev/stdout; true; } | sha256sum | cut -d' ' -f1)"
  if [[ -f "$dir/.complete" && "$(cat "$dir/.complete")" == "$hash" ]]; then
    say "$name: cached in ${dir#"$REPO_ROOT"/}"
    return 0
  fi
  need mvn "install Maven 3.6+"
  need java "install a JDK 17+"
  mkdir -p "$DIST_DIR/mvn-logs"
  local tmp="$dir.tmp.$$" log="$DIST_DIR/mvn-logs/$name.log"
  rm -rf "$tmp"
  mkdir -p "$tmp/libs"
  printf '%s\n' "$pom" >"$tmp/pom.xml"
  say "$name: resolving from Maven Central (log: $log)"
  local start=$SECONDS
  local -a mvn_args=(-B -q -U -Dstyle.color=never -f "$tmp/pom.xml")
  [[ -n "${KPROXY_M2_REPO:-}" ]] && mvn_args+=("-Dmaven.repo.local=$KPROXY_M2_REPO")
  if ! mvn "${mvn_args[@]}" "$MVN_DEPENDENCY_PLUGIN:copy-dependencies" \
      -DoutputDirectory="$tmp/libs" -DincludeScope=runtime -Dmdep.useRepositoryLayout=false \
      >"$log" 2>&1; then
    echo "kafka.sh: error: Maven could not resolve the $name classpath. Maven said:" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^\[(ERROR|FATAL)\]' \
      | grep -vE 'Re-run Maven|For more information|full stack trace|\[Help 1\] http|^\[ERROR\] *$' \
      | sed 's/ -> \[Help 1\]$//; s/^/    /' | head -20 >&2 || true
    echo "kafka.sh: full Maven output: $log" >&2
    rm -rf "$tmp"
    exit 1
  fi
  if [[ ! -f "$tmp/libs/$main_jar" ]]; then
    rm -rf "$tmp"
    die "$name: Maven succeeded but $main_jar is not in the classpath (see $log)"
  fi
  [[ -n "$extra" ]] && "$extra" "$tmp"
  ls "$tmp/libs" >"$tmp/jars.txt"
  printf '%s\n' "$hash" >"$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  say "$name: $(wc -l <"$dir/jars.txt") jars in $((SECONDS - start)) s"
}

excl_args() { local x; for x in $1; do printf '%s ' "$x"; done; }

broker_deps() { # VERSION EXCLUDES
  local v="$1" ex
  # shellcheck disable=SC2046 # word splitting of the exclusion list is intended
  dep_xml "org.apache.kafka:kafka_${SCALA_BINARY}:$v" $(excl_args "$2")
  dep_xml "org.slf4j:slf4j-api:$SLF4J_VERSION"
  if (($(kmajor "$v") >= 4)); then
    for ex in log4j-api log4j-core log4j-slf4j-impl log4j-1.2-api; do
      dep_xml "org.apache.logging.log4j:$ex:$LOG4J2_VERSION"
    done
  else
    dep_xml "ch.qos.reload4j:reload4j:$RELOAD4J_VERSION"
    dep_xml "org.slf4j:slf4j-reload4j:$SLF4J_VERSION"
  fi
}

# The tools log through slf4j-simple, configured by conf/simplelogger.properties on the
# classpath: WARN and above to stderr, so the JSON lines on stdout stay clean.
tools_conf() { # DIR (or /dev/stdout to feed the hash)
  local out="$1"
  [[ "$out" != /dev/stdout ]] && { mkdir -p "$out/conf"; out="$out/conf/simplelogger.properties"; }
  cat >"$out" <<'EOF'
org.slf4j.simpleLogger.defaultLogLevel=warn
org.slf4j.simpleLogger.logFile=System.err
org.slf4j.simpleLogger.showDateTime=true
org.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS
EOF
}

fetch_brokers() {
  fetch_cp "broker-$KAFKA_SOURCE_VERSION" "$SOURCE_CP_DIR" "kafka_${SCALA_BINARY}-$KAFKA_SOURCE_VERSION.jar" \
    "$(broker_deps "$KAFKA_SOURCE_VERSION" "$KAFKA_SOURCE_EXCLUDES")"
  fetch_cp "broker-$KAFKA_TARGET_VERSION" "$TARGET_CP_DIR" "kafka_${SCALA_BINARY}-$KAFKA_TARGET_VERSION.jar" \
    "$(broker_deps "$KAFKA_TARGET_VERSION" "$KAFKA_TARGET_EXCLUDES")"
}

fetch_tools() {
  fetch_cp "tools-$KAFKA_TOOLS_VERSION" "$TOOLS_CP_DIR" "kafka-tools-$KAFKA_TOOLS_VERSION.jar" \
    "$(dep_xml "org.apache.kafka:kafka-tools:$KAFKA_TOOLS_VERSION"
       dep_xml "org.slf4j:slf4j-api:$SLF4J_VERSION"
       dep_xml "org.slf4j:slf4j-simple:$SLF4J_VERSION")" tools_conf
}

fetch_mm2() {
  fetch_cp "mm2-$KAFKA_MM2_VERSION" "$MM2_CP_DIR" "connect-mirror-$KAFKA_MM2_VERSION.jar" \
    "$(dep_xml "org.apache.kafka:connect-mirror:$KAFKA_MM2_VERSION"
       dep_xml "org.apache.kafka:connect-runtime:$KAFKA_MM2_VERSION"
       dep_xml "org.slf4j:slf4j-api:$SLF4J_VERSION"
       dep_xml "org.slf4j:slf4j-simple:$SLF4J_VERSION")" tools_conf
}

require_cp() { # DIR WHAT
  [[ -f "$1/.complete" ]] || die "$2 classpath missing in $1: run 'test/kafka/kafka.sh ${3:-fetch}' first"
}

tools_cp() { require_cp "$TOOLS_CP_DIR" "tools"; echo "$TOOLS_CP_DIR/conf:$TOOLS_CP_DIR/libs/*"; }
mm2_cp() { require_cp "$MM2_CP_DIR" "MirrorMaker 2" fetch-mm2; echo "$MM2_CP_DIR/conf:$MM2_CP_DIR/libs/*"; }

# ---- configuration ------------------------------------------------------------------------

# write_server_properties NAME VERSION BROKER_PORT CONTROLLER_PORT DIR SECURE_PORT FAULT_PORT FAULT_ADVERTISED_PORT
write_server_properties() {
  local name="$1" v="$2" bport="$3" cport="$4" dir="$5" sport="$6" fport="$7" faport="$8"
  {
    if zk_mode "$v"; then
      # ZooKeeper mode: the controller port is ZooKeeper's client port.
      cat <<EOF
# generated by test/kafka/kafka.sh: $name cluster, Kafka $v, single broker in ZooKeeper mode
broker.id=1
zookeeper.connect=127.0.0.1:$cport
zookeeper.connection.timeout.ms=30000
listeners=PLAINTEXT://127.0.0.1:$bport,FAULT://127.0.0.1:$fport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport,FAULT://127.0.0.1:$faport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,FAULT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
EOF
    else
      cat <<EOF
# generated by test/kafka/kafka.sh: $name cluster, Kafka $v, single-node KRaft combined mode
process.roles=broker,controller
node.id=1
EOF
    fi
    if zk_mode "$v"; then
      : # no quorum settings
    elif (($(kmajor "$v") >= 4)); then
      # Dynamic quorum (KIP-853): bootstrap servers here, `format --standalone` below.
      echo "controller.quorum.bootstrap.servers=127.0.0.1:$cport"
    else
      echo "controller.quorum.voters=1@127.0.0.1:$cport"
    fi
    if secure_on "$v"; then
      # The SASL_SSL listener beside the plaintext one; brokers talk to each other and to the
      # controller in plaintext (one node, loopback). The PLAIN user is the JAAS line's
      # user_kproxy; the SCRAM users are created at format time (format_storage).
      local pw
      pw="$(cat "$SECURE_DIR/kproxy.password")"
      cat <<EOF
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport,SASL_SSL://127.0.0.1:$sport,FAULT://127.0.0.1:$fport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport,SASL_SSL://127.0.0.1:$sport,FAULT://127.0.0.1:$faport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,FAULT:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_kproxy="$pw";
ssl.keystore.type=PEM
ssl.keystore.location=$SECURE_DIR/broker.pem
EOF
    elif ! zk_mode "$v"; then
      cat <<EOF
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport,FAULT://127.0.0.1:$fport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport,FAULT://127.0.0.1:$faport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,FAULT:PLAINTEXT
EOF
    fi
    cat <<EOF
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.threads=1
log.segment.bytes=67108864
log.retention.hours=168
EOF
    if (($(kmajor "$v") >= 4)); then
      cat <<EOF
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
    fi
  } >"$dir/server.properties"
  # It may hold the PLAIN password (the run dir only, never committed).
  chmod 600 "$dir/server.properties"
}

write_log_config() { # VERSION DIR -> prints the -D option that selects it
  local v="$1" dir="$2"
  if (($(kmajor "$v") >= 4)); then
    cat >"$dir/log4j2.properties" <<EOF
# generated by test/kafka/kafka.sh: INFO to server.log, request logging at WARN
status = warn
name = kproxy-test-broker
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/server.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel\$
logger.network.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
    echo "-Dlog4j2.configurationFile=file:$dir/log4j2.properties"
  else
    cat >"$dir/log4j.properties" <<EOF
# generated by test/kafka/kafka.sh: INFO to server.log, request logging at WARN
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/server.log
log4j.appender.file.Append=true
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel\$=WARN
log4j.logger.kafka.authorizer.logger=WARN
EOF
    echo "-Dlog4j.configuration=file:$dir/log4j.properties"
  fi
}

# write_zookeeper_config DIR PORT: a standalone ZooKeeper (the one Kafka's pom brings) for a
# ZooKeeper-mode broker; prints the -D option selecting its log config.
write_zookeeper_config() {
  local dir="$1" port="$2"
  mkdir -p "$dir/zookeeper"
  cat >"$dir/zookeeper.properties" <<EOF
# generated by test/kafka/kafka.sh: standalone ZooKeeper for the broker in $dir
dataDir=$dir/zookeeper
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
tickTime=2000
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
EOF
  cat >"$dir/zk-log4j.properties" <<EOF
# generated by test/kafka/kafka.sh: ZooKeeper INFO to zookeeper.log
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/zookeeper.log
log4j.appender.file.Append=true
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
  echo "-Dlog4j.configuration=file:$dir/zk-log4j.properties"
}

# ---- processes ------------------------------------------------------------------------------

# is_our_broker PID DIR: the process runs kafka.Kafka with DIR/server.properties.
is_our_broker() {
  local pid="$1" dir="$2" cmd
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *" kafka.Kafka $dir/server.properties"* ]]
}

# is_our_zookeeper PID DIR: the process runs QuorumPeerMain with DIR/zookeeper.properties.
is_our_zookeeper() {
  local pid="$1" dir="$2" cmd
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *" org.apache.zookeeper.server.quorum.QuorumPeerMain $dir/zookeeper.properties"* ]]
}

# our_pids DIR PIDFILE MATCHER: the pid file's process if MATCHER accepts it, plus any other
# process MATCHER accepts (e.g. after a lost pid file).
our_pids() {
  local dir="$1" pidfile="$2" match="$3" p
  local -a pids=()
  if [[ -f "$dir/$pidfile" ]]; then
    p="$(cat "$dir/$pidfile")"
    [[ "$p" =~ ^[0-9]+$ ]] && "$match" "$p" "$dir" && pids+=("$p")
  fi
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ " ${pids[*]:-} " == *" $p "* ]] && continue
    "$match" "$p" "$dir" && pids+=("$p")
  done
  echo "${pids[*]:-}"
}

broker_pids() { our_pids "$1" kafka.pid is_our_broker; }
zookeeper_pids() { our_pids "$1" zk.pid is_our_zookeeper; }

# stop_clusters NAME...: SIGTERM to every broker, wait up to KAFKA_STOP_SECONDS, then SIGKILL;
# then the same for ZooKeeper-mode clusters' ZooKeepers (after the brokers: a broker shutting
# down still talks to its ZooKeeper).
stop_clusters() {
  stop_procs broker_pids kafka.pid broker "$@"
  stop_procs zookeeper_pids zk.pid ZooKeeper "$@"
}

# stop_procs PIDS_FN PIDFILE WHAT NAME...
stop_procs() {
  local pids_fn="$1" pidfile="$2" what="$3"
  shift 3
  local name pids all="" p waited=0
  for name in "$@"; do
    pids="$("$pids_fn" "$RUN_DIR/$name")"
    rm -f "$RUN_DIR/$name/$pidfile"
    [[ -z "$pids" ]] && continue
    say "$name: stopping $what pid $pids (SIGTERM)"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    all+="$pids "
  done
  [[ -z "$all" ]] && return 0
  while :; do
    local alive=""
    for p in $all; do kill -0 "$p" 2>/dev/null && alive+="$p "; done
    [[ -z "$alive" ]] && break
    if ((waited >= KAFKA_STOP_SECONDS * 5)); then
      say "still running after ${KAFKA_STOP_SECONDS}s, SIGKILL pid $alive"
      # shellcheck disable=SC2086
      kill -KILL $alive 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  say "stopped $(echo $all | wc -w) $what process(es) in $((waited / 5)) s"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_port_free() { # PORT NAME
  if port_open "$1"; then
    local who
    who="$(ss -ltnpH "sport = :$1" 2>/dev/null | sed 's/^/    /' || true)"
    die "port 127.0.0.1:$1 (for $2) is already in use by a process this script did not start:
$who
    stop it (if it is a kproxy test broker from another checkout, run 'test/kafka/kafka.sh down' there)"
  fi
}

log_tail() { # NAME [N]
  local name="$1" n="${2:-50}" dir="$RUN_DIR/$1" f
  for f in "$dir/zookeeper.log" "$dir/server.log" "$dir/console.log"; do
    [[ -s "$f" ]] || continue
    echo "----- $name: last $n lines of $f -----" >&2
    tail -n "$n" "$f" >&2
  done
}

java_check() { # VERSION
  need java "install a JDK 17+"
  local jv
  jv="$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2; exit}')"
  if [[ -n "$jv" && "${jv%%.*}" =~ ^[0-9]+$ ]] && ((${jv%%.*} < 17)) && (($(kmajor "$1") >= 4)); then
    die "Kafka $1 brokers need Java 17+, found java $jv"
  fi
}

# start_cluster NAME VERSION CPDIR BPORT CPORT FORMAT_ARGS SECURE_PORT FPORT FAPORT: format and launch, no waiting.
start_cluster() {
  local name="$1" v="$2" cpdir="$3" bport="$4" cport="$5" fargs="$6" sport="$7" fport="$8" faport="$9"
  local dir="$RUN_DIR/$name" cp="$cpdir/libs/*" logopt cid
  rm -rf "$dir"
  mkdir -p "$dir/data"
  write_server_properties "$name" "$v" "$bport" "$cport" "$dir" "$sport" "$fport" "$faport"
  if secure_on "$v"; then echo "$sport" >"$dir/secure.port"; fi
  logopt="$(write_log_config "$v" "$dir")"
  if zk_mode "$v"; then
    start_zookeeper "$name" "$dir" "$cp" "$cport"
  else
    format_storage "$name" "$v" "$dir" "$cp" "$logopt" "$fargs"
  fi
  # setsid: the broker outlives this script and a Ctrl-C in the terminal that ran it;
  # 8>&- 9>&-: it must not inherit the locks of lock_dist and lock_run.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/kafka.pid" \
    java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -cp "$cp" "$logopt" -Dkafka.logs.dir="$dir" \
    kafka.Kafka "$dir/server.properties" >"$dir/console.log" 2>&1 </dev/null 8>&- 9>&- &
  say "$name: started Kafka $v ($(zk_mode "$v" && echo ZooKeeper || echo KRaft) mode) on 127.0.0.1:$bport, logs in $dir"
}

# start_zookeeper NAME DIR CP PORT: launch ZooKeeper and wait until it accepts connections
# (the broker gives up on a ZooKeeper it cannot reach).
start_zookeeper() {
  local name="$1" dir="$2" cp="$3" port="$4" logopt deadline=$((EPOCHSECONDS + KAFKA_WAIT_SECONDS))
  logopt="$(write_zookeeper_config "$dir" "$port")"
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/zk.pid" \
    java $KAFKA_ZK_HEAP_OPTS -XX:+UseSerialGC -Djava.awt.headless=true -cp "$cp" "$logopt" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zookeeper.properties" \
    >"$dir/zk-console.log" 2>&1 </dev/null 8>&- 9>&- &
  until port_open "$port"; do
    local pid=""
    [[ -s "$dir/zk.pid" ]] && pid="$(cat "$dir/zk.pid")"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/zookeeper.log" "$dir/zk-console.log" >&2 2>/dev/null || true
      die "$name: ZooKeeper exited during startup (logs above)"
    fi
    ((EPOCHSECONDS >= deadline)) && die "$name: ZooKeeper did not open 127.0.0.1:$port within ${KAFKA_WAIT_SECONDS}s"
    sleep 0.3
  done
  say "$name: ZooKeeper on 127.0.0.1:$port"
}

# format_storage NAME VERSION DIR CP LOGOPT FORMAT_ARGS: KRaft storage with a fresh cluster id.
format_storage() {
  local name="$1" v="$2" dir="$3" cp="$4" logopt="$5" fargs="$6" cid
  local -a tooljvm=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -cp "$cp" "$logopt")
  cid="$("${tooljvm[@]}" kafka.tools.StorageTool random-uuid 2>>"$dir/format.log" | tail -n 1)" \
    || { cat "$dir/format.log" >&2; die "$name: StorageTool random-uuid failed"; }
  [[ "$cid" =~ ^[A-Za-z0-9_-]{22}$ ]] || { cat "$dir/format.log" >&2; die "$name: unexpected cluster id '$cid'"; }
  echo "$cid" >"$dir/cluster.id"
  local -a fmt=(kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties")
  (($(kmajor "$v") >= 4)) && fmt+=(--standalone)
  # shellcheck disable=SC2206 # extra format args are word-split on purpose
  [[ -n "$fargs" ]] && fmt+=($fargs)
  if secure_on "$v"; then
    local pw m
    pw="$(cat "$SECURE_DIR/kproxy.password")"
    for m in SCRAM-SHA-256 SCRAM-SHA-512; do fmt+=(--add-scram "$m=[name=kproxy,password=$pw]"); done
  fi
  if ! "${tooljvm[@]}" "${fmt[@]}" >>"$dir/format.log" 2>&1; then
    cat "$dir/format.log" >&2
    die "$name: formatting storage failed (kafka $v)"
  fi
  say "$name: formatted KRaft storage (cluster id $cid)"
}

# wait_cluster NAME BPORT DEADLINE_EPOCH: the process lives, the log says started, TCP accepts.
wait_cluster() {
  local name="$1" bport="$2" deadline="$3" dir="$RUN_DIR/$1" pid=""
  while :; do
    [[ -z "$pid" && -s "$dir/kafka.pid" ]] && pid="$(cat "$dir/kafka.pid")"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      log_tail "$name" 50
      die "$name: broker process $pid exited during startup (logs above)"
    fi
    # KRaft logs 'Kafka Server started'; a ZooKeeper-mode broker '[KafkaServer id=1] started'.
    if [[ -n "$pid" ]] && grep -qE 'Kafka Server started|\] started \(kafka\.server\.KafkaServer\)' "$dir/server.log" 2>/dev/null && port_open "$bport"; then
      say "$name: broker started and port $bport open (${SECONDS} s)"
      return 0
    fi
    if ((EPOCHSECONDS >= deadline)); then
      log_tail "$name" 50
      die "$name: broker did not start within ${KAFKA_WAIT_SECONDS}s (logs above)"
    fi
    sleep 0.5
  done
}

build_waitkafka() {
  need go "install Go"
  mkdir -p "$BIN_DIR"
  (cd "$REPO_ROOT" && go build -o "$BIN_DIR/" ./test/kafka/waitkafka ./test/kafka/kafkasecrets) \
    || die "building test/kafka/waitkafka and test/kafka/kafkasecrets failed"
}

go_check() { # NAME BPORT DEADLINE
  local name="$1" bport="$2" deadline="$3" left
  left=$((deadline - EPOCHSECONDS)); ((left < 15)) && left=15
  if ! "$BIN_DIR/waitkafka" -b "127.0.0.1:$bport" -timeout "${left}s" \
      -produce "_kproxy_harness_check" -name "$name" -apiversions "$RUN_DIR/$name/apiversions.txt"; then
    log_tail "$name" 50
    die "$name: Metadata/produce/consume check against 127.0.0.1:$bport failed (logs above)"
  fi
  [[ -f "$RUN_DIR/$name/secure.port" ]] || return 0
  local sport
  sport="$(cat "$RUN_DIR/$name/secure.port")"
  if ! "$BIN_DIR/waitkafka" -b "127.0.0.1:$sport" -timeout 30s -name "$name SASL_SSL" \
      -tls-ca "$SECURE_DIR/ca.pem" -sasl SCRAM-SHA-512 -sasl-user kproxy -sasl-password-file "$SECURE_DIR/kproxy.password"; then
    log_tail "$name" 50
    die "$name: Metadata over SASL_SSL (SCRAM-SHA-512) against 127.0.0.1:$sport failed (logs above)"
  fi
}

cmd_up() {
  local t0=$SECONDS
  fetch_brokers
  java_check "$KAFKA_TARGET_VERSION"
  stop_clusters source target
  check_port_free "$SOURCE_BROKER_PORT" "source broker"
  check_port_free "$SOURCE_CONTROLLER_PORT" "source controller"
  check_port_free "$TARGET_BROKER_PORT" "target broker"
  check_port_free "$TARGET_CONTROLLER_PORT" "target controller"
  check_port_free "$SOURCE_FAULT_PORT" "source fault listener"
  check_port_free "$TARGET_FAULT_PORT" "target fault listener"
  mkdir -p "$RUN_DIR"
  rm -rf "$SECURE_DIR"
  local name v
  for name in source target; do
    [[ $name == source ]] && v="$KAFKA_SOURCE_VERSION" || v="$KAFKA_TARGET_VERSION"
    if [[ "$KAFKA_SECURE" == 1 ]] && ! secure_on "$v"; then
      say "$name: Kafka $v stays plaintext-only (the SASL_SSL listener needs KRaft 3.5+)"
    fi
  done
  if secure_on "$KAFKA_SOURCE_VERSION" || secure_on "$KAFKA_TARGET_VERSION"; then
    if secure_on "$KAFKA_SOURCE_VERSION"; then check_port_free "$SOURCE_SECURE_PORT" "source SASL_SSL"; fi
    if secure_on "$KAFKA_TARGET_VERSION"; then check_port_free "$TARGET_SECURE_PORT" "target SASL_SSL"; fi
    # The brokers' certificate and password must exist before formatting: build first.
    build_waitkafka >"$RUN_DIR/waitkafka-build.log" 2>&1 || { cat "$RUN_DIR/waitkafka-build.log" >&2; die "building the harness tools failed"; }
    "$BIN_DIR/kafkasecrets" -dir "$SECURE_DIR" || die "making the SASL_SSL secrets failed"
    say "SASL_SSL secrets (throwaway CA, broker certificate, password) in $SECURE_DIR"
  fi
  # Any failure or interrupt from here on stops whatever was started (logs are kept).
  trap 'rc=$?; trap - EXIT; if ((rc != 0)); then stop_clusters source target; fi; exit $rc' EXIT
  trap 'exit 130' INT TERM
  # Compile the checker while the JVMs start (go build is cached after the first time).
  local gopid=""
  if [[ "$KAFKA_SKIP_GO_CHECK" != 1 ]]; then
    build_waitkafka >"$RUN_DIR/waitkafka-build.log" 2>&1 &
    gopid=$!
  fi
  # Format and launch both clusters in parallel (each is a few JVM starts).
  local spid tpid
  start_cluster source "$KAFKA_SOURCE_VERSION" "$SOURCE_CP_DIR" "$SOURCE_BROKER_PORT" "$SOURCE_CONTROLLER_PORT" "$KAFKA_SOURCE_FORMAT_ARGS" \
    "$SOURCE_SECURE_PORT" "$SOURCE_FAULT_PORT" "$SOURCE_FAULT_ADVERTISED_PORT" &
  spid=$!
  start_cluster target "$KAFKA_TARGET_VERSION" "$TARGET_CP_DIR" "$TARGET_BROKER_PORT" "$TARGET_CONTROLLER_PORT" "$KAFKA_TARGET_FORMAT_ARGS" \
    "$TARGET_SECURE_PORT" "$TARGET_FAULT_PORT" "$TARGET_FAULT_ADVERTISED_PORT" &
  tpid=$!
  local src_ok=0 tgt_ok=0
  wait "$spid" || src_ok=$?
  wait "$tpid" || tgt_ok=$?
  ((src_ok == 0 && tgt_ok == 0)) || die "could not start the clusters (messages above)"
  local deadline=$((EPOCHSECONDS + KAFKA_WAIT_SECONDS))
  wait_cluster source "$SOURCE_BROKER_PORT" "$deadline"
  wait_cluster target "$TARGET_BROKER_PORT" "$deadline"
  say "both brokers started $((SECONDS - t0)) s after 'up' began"
  if [[ -n "$gopid" ]]; then
    wait "$gopid" || { cat "$RUN_DIR/waitkafka-build.log" >&2; die "building test/kafka/waitkafka failed"; }
    go_check source "$SOURCE_BROKER_PORT" "$deadline"
    go_check target "$TARGET_BROKER_PORT" "$deadline"
  fi
  trap - EXIT INT TERM
  say "up in $((SECONDS - t0)) s: source $KAFKA_SOURCE_VERSION 127.0.0.1:$SOURCE_BROKER_PORT, target $KAFKA_TARGET_VERSION 127.0.0.1:$TARGET_BROKER_PORT"
}

cmd_down() {
  stop_clusters source target
}

# cmd_restart_source: stop the source broker and start it again on the same storage (no
# format), e.g. to drop the fetch sessions it holds.
cmd_restart_source() {
  stop_clusters source
  cmd_start source
}

# cluster_vars NAME: the version, classpath dir and broker port of cluster NAME.
cluster_vars() {
  case "$1" in
    source) C_V="$KAFKA_SOURCE_VERSION" C_CP="$SOURCE_CP_DIR" C_PORT="$SOURCE_BROKER_PORT" ;;
    target) C_V="$KAFKA_TARGET_VERSION" C_CP="$TARGET_CP_DIR" C_PORT="$TARGET_BROKER_PORT" ;;
    *) die "unknown cluster '$1' (source or target)" ;;
  esac
}

# cmd_kill NAME: SIGKILL the broker (a crash: no controlled shutdown, no flush). ZooKeeper,
# if any, keeps running, as a separate machine's would.
cmd_kill() {
  local dir="$RUN_DIR/$1" pids p
  cluster_vars "$1"
  pids="$(broker_pids "$dir")"
  [[ -z "$pids" ]] && { say "$1: no broker running"; return 0; }
  say "$1: SIGKILL broker pid $pids"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  for p in $pids; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  rm -f "$dir/kafka.pid"
}

# cmd_start NAME: start NAME's broker on its existing storage and wait until it serves.
# The launch line is start_cluster's.
cmd_start() {
  local name="$1" dir="$RUN_DIR/$1" logopt
  cluster_vars "$name"
  [[ -f "$dir/server.properties" ]] || die "$name: no server.properties in $dir (run up first)"
  [[ -n "$(broker_pids "$dir")" ]] && die "$name: broker already running"
  logopt="$(write_log_config "$C_V" "$dir")"
  [[ -f "$dir/server.log" ]] && mv "$dir/server.log" "$dir/server.log.before-restart"
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/kafka.pid" \
    java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -cp "$C_CP/libs/*" "$logopt" -Dkafka.logs.dir="$dir" \
    kafka.Kafka "$dir/server.properties" >>"$dir/console.log" 2>&1 </dev/null 8>&- 9>&- &
  wait_cluster "$name" "$C_PORT" $((EPOCHSECONDS + KAFKA_WAIT_SECONDS))
}

cmd_status() {
  local name pids rc=0
  for name in source target; do
    pids="$(broker_pids "$RUN_DIR/$name")"
    if [[ -n "$pids" ]]; then echo "$name: running (pid $pids)"; else echo "$name: stopped"; rc=3; fi
  done
  return $rc
}

cmd_logs() {
  local n="${1:-50}" name
  for name in source target; do
    if [[ -d "$RUN_DIR/$name" ]]; then log_tail "$name" "$n" 2>&1; else echo "kafka.sh: $name: no run directory"; fi
  done
}

cmd_env() {
  local tcp=""
  if [[ -f "$TOOLS_CP_DIR/.complete" ]]; then
    tcp="$TOOLS_CP_DIR/conf:$TOOLS_CP_DIR/libs/*"
  else
    say "warning: tools classpath not fetched yet; run 'test/kafka/kafka.sh fetch'"
  fi
  printf 'export %s=%q\n' \
    KPROXY_SOURCE_BOOTSTRAP "127.0.0.1:$SOURCE_BROKER_PORT" \
    KPROXY_TARGET_BOOTSTRAP "127.0.0.1:$TARGET_BROKER_PORT" \
    KPROXY_SOURCE_VERSION "$KAFKA_SOURCE_VERSION" \
    KPROXY_TARGET_VERSION "$KAFKA_TARGET_VERSION" \
    KPROXY_TOOLS_VERSION "$KAFKA_TOOLS_VERSION" \
    KPROXY_TOOLS_CP "$tcp" \
    KPROXY_KAFKA_RUN "$RUN_DIR" \
    KPROXY_SOURCE_FAULT_LISTENER "127.0.0.1:$SOURCE_FAULT_PORT" \
    KPROXY_SOURCE_FAULT_ADVERTISED "127.0.0.1:$SOURCE_FAULT_ADVERTISED_PORT" \
    KPROXY_TARGET_FAULT_LISTENER "127.0.0.1:$TARGET_FAULT_PORT" \
    KPROXY_TARGET_FAULT_ADVERTISED "127.0.0.1:$TARGET_FAULT_ADVERTISED_PORT"
  if [[ -f "$MM2_CP_DIR/.complete" ]]; then
    printf 'export %s=%q\n' KPROXY_MM2_CP "$MM2_CP_DIR/conf:$MM2_CP_DIR/libs/*"
  fi
  # The SASL_SSL listeners of the last `up` with KAFKA_SECURE=1 (user kproxy; the password is
  # in the file, never in the environment).
  local name
  for name in source target; do
    if [[ -f "$RUN_DIR/$name/secure.port" ]]; then
      printf 'export %s=%q\n' "KPROXY_${name^^}_SECURE_BOOTSTRAP" "127.0.0.1:$(cat "$RUN_DIR/$name/secure.port")"
    fi
  done
  if [[ -f "$SECURE_DIR/ca.pem" ]]; then printf 'export %s=%q\n' KPROXY_KAFKA_SECURE_DIR "$SECURE_DIR"; fi
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
}

# lock_dist: one resolution at a time per cache (another checkout's fetch may share it).
DIST_LOCKED=0
lock_dist() {
  ((DIST_LOCKED)) && return 0
  mkdir -p "$DIST_DIR"
  exec 8>"$DIST_DIR/.lock"
  if command -v flock >/dev/null 2>&1 && ! flock -n 8; then
    say "waiting for another kafka.sh fetch on $DIST_DIR"
    flock -w 600 8 || die "another kafka.sh fetch has held $DIST_DIR/.lock for 600 s"
  fi
  DIST_LOCKED=1
}

# lock_run: serialize up/down of this checkout's clusters (two `up`s at once would race).
lock_run() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    say "waiting for another kafka.sh up/down on $RUN_DIR"
    flock -w 300 9 || die "another kafka.sh up/down has held $RUN_DIR/.lock for 300 s"
  fi
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    fetch) fetch_brokers; fetch_tools ;;
    fetch-brokers) fetch_brokers ;;
    fetch-tools) fetch_tools ;;
    fetch-mm2) fetch_mm2 ;;
    up) lock_run; cmd_up ;;
    down) lock_run; cmd_down ;;
    restart-source) lock_run; cmd_restart_source ;;
    kill) lock_run; cmd_kill "${1:?kill needs a cluster name}" ;;
    start) lock_run; cmd_start "${1:?start needs a cluster name}" ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    env) cmd_env ;;
    tools-cp) tools_cp ;;
    mm2-cp) mm2_cp ;;
    -h | --help | help) usage ;;
    "") usage; exit 2 ;;
    *) say "unknown subcommand '$cmd'"; usage; exit 2 ;;
  esac
}

main "$@"
