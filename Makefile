# kproxy: the two commands a newcomer runs are `make demo` and `make test`.
GO ?= go
# Fuzz budgets are execution counts (Nx): a duration budget races the fuzz
# coordinator's deadline in Go 1.26 (golang/go#75804, see test/run-all.sh).
FUZZTIME ?= 200000x
FUZZTIME_NEW ?= 100000x
# The streaming Fetch relay parser reads a whole Fetch answer per input.
FUZZTIME_RELAY ?= 20000x

.PHONY: demo test build unit fuzz fuzz-long integration lint bench clients

## demo: the whole story on embedded clusters, with a printed verdict (no Java needed)
demo:
	$(GO) run ./cmd/kproxy-demo

## test: install what is missing, start real Kafka, run every test (what CI runs)
test:
	bash test/run-all.sh

build:
	$(GO) build -o bin/kproxy ./cmd/kproxy

## unit: fast tests, race detector on the concurrent packages
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/test/integration$$')

## fuzz: a short run of each fuzz target (request decoding, the client frame reader, upstream responses,
## config files, offset-map files, the producer-sessions file, SASL server conversations, the streaming Fetch relay)
fuzz:
	$(GO) test ./proxy/ -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/ -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/ -run '^$$' -fuzz '^FuzzUpstreamResponse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config/ -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME_NEW)
	$(GO) test ./replicator/ -run '^$$' -fuzz '^FuzzOffsetMapFile$$' -fuzztime $(FUZZTIME_NEW)
	$(GO) test ./replicator/ -run '^$$' -fuzz '^FuzzOffsetMapRoundTrip$$' -fuzztime $(FUZZTIME_NEW)
	$(GO) test ./proxy/ -run '^$$' -fuzz '^FuzzProducerSessionsFile$$' -fuzztime $(FUZZTIME_NEW)
	$(GO) test ./secure/ -run '^$$' -fuzz '^FuzzSASLServer$$' -fuzztime $(FUZZTIME_NEW)
	$(GO) test ./proxy/ -run '^$$' -fuzz '^FuzzFetchRelay$$' -fuzztime $(FUZZTIME_RELAY)
	$(GO) test ./config/ -run '^$$' -fuzz '^FuzzGlobAgreesWithPathMatch$$' -fuzztime $(FUZZTIME_NEW)

## fuzz-long: every fuzz target to 10 million executions, one after another, one worker each
## (the once-per-release run of docs/operations.md "Fuzzing"; hours on a shared machine). Logs in $(FUZZLOGS).
FUZZLONG ?= 10000000x
FUZZLOGS ?= fuzz-logs
fuzz-long:
	mkdir -p $(FUZZLOGS)
	for pt in proxy:FuzzReadFrame replicator:FuzzOffsetMapRoundTrip secure:FuzzSASLServer \
		replicator:FuzzOffsetMapFile proxy:FuzzProducerSessionsFile proxy:FuzzParseRequest \
		proxy:FuzzUpstreamResponse config:FuzzParse proxy:FuzzFetchRelay config:FuzzGlobAgreesWithPathMatch; do \
	  pkg=$${pt%%:*}; name=$${pt#*:}; \
	  echo "$$name start $$(date -u +%FT%TZ) load $$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $(FUZZLOGS)/summary.txt; \
	  nice -n 10 $(GO) test ./$$pkg/ -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZLONG) -parallel 1 \
	    > $(FUZZLOGS)/$$name.log 2>&1 || { tail -20 $(FUZZLOGS)/$$name.log; exit 1; }; \
	  echo "$$name end $$(date -u +%FT%TZ) $$(grep 'fuzz: elapsed' $(FUZZLOGS)/$$name.log | tail -1)" | tee -a $(FUZZLOGS)/summary.txt; \
	done

## clients: build the client-matrix drivers (Sarama, kafka-go, librdkafka, kafkajs)
clients:
	bash test/clients/build.sh

## integration: real Kafka (make kafka-up first) through kproxy with every client
integration:
	eval "$$(bash test/kafka/kafka.sh env)" && $(GO) test -count=1 -timeout 20m -v ./test/integration/...

## test-faults: the fault tests (test/faults proxy, broker and kproxy kills, a full state_dir) in their long forms; real Kafka must be up (make kafka-up)
.PHONY: test-faults
test-faults:
	eval "$$(bash test/kafka/kafka.sh env)" && KPROXY_FAULTS_LONG=1 $(GO) test -count=1 -timeout 40m -v -run '^TestFault' ./test/integration/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

## helm: render the Helm chart (defaults and each ci/*.yaml), validate the objects against the Kubernetes API types and the config with `kproxy validate`
.PHONY: helm
helm: build
	cd deploy/helm/check && $(GO) run . -chart ../kproxy -kproxy ../../../bin/kproxy

## soak: the cutover scenario for KPROXY_SOAK (default 30m): six clients, two topics flipping every 20 and 40 s, group moves, blackholes (KPROXY_SOAK_RESETS=1, KPROXY_SOAK_KILL=1 add more); plots in bench/soak
.PHONY: soak
soak:
	bash bench/soak/run.sh

## test-matrix: the broker-version matrix (2.8.2, 3.5.2, 3.9.2 -> 4.4.0 and 4.4.0 -> 3.9.2), summary in .cache/matrix
.PHONY: test-matrix
test-matrix:
	bash test/clients/build.sh
	bash test/kafka/kafka.sh fetch
	bash test/matrix.sh

## bench: kproxy vs direct on real Kafka; writes bench/RESULTS.md and bench/results.json
bench:
	bash bench/run.sh

## bench-produce-replication: produce latency through kproxy on topics its replicator copies vs topics it does not, one run (issue 12 item 6)
.PHONY: bench-produce-replication
bench-produce-replication:
	bash bench/produce_with_replication.sh

## bench-tls: produce and fetch through kproxy with TLS+SASL on both sides vs TLS+SASL direct (harness with KAFKA_SECURE=1)
.PHONY: bench-tls
bench-tls:
	bash bench/tls/run.sh

## bench-replication: kproxy's replicator vs MirrorMaker 2 on real Kafka; appends to bench/RESULTS.md and bench/results.json
.PHONY: bench-replication
bench-replication:
	bash bench/replication/run.sh

include Makefile.kafka
