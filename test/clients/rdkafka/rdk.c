/*
 * rdk: librdkafka driver for the kproxy client matrix.
 *
 *   rdk produce --bootstrap 127.0.0.1:9092 --topic t --count 500 --run 0
 *   rdk consume --bootstrap 127.0.0.1:9092 --topic t --group g --count 500
 *
 * Options may be spelled -opt or --opt, "--opt value" or "--opt=value"; the
 * mode may also be given as --mode. Prints the kproxy checker's JSON lines on
 * stdout (ack / consume / error / rebalance); logs go to stderr.
 *
 * produce: --count records, key k-<i>, value rdkafka-<run>-<i> (i from
 * --start), acks=all. An "ack" line per record whose delivery report carried
 * no error, with the partition and offset from the report (for transactions:
 * printed only after the commit succeeded). Exit 1 if any record failed.
 *
 * consume: high-level KafkaConsumer (rd_kafka_subscribe) in --group, subscribed
 * to every topic of --topic (a comma-separated list is allowed); prints a
 * "consume" line per record until --count were seen (then keeps reading for
 * --linger seconds) or --timeout; stores the offset of each printed record
 * only (enable.auto.offset.store=false), commits synchronously at the end and
 * closes (leaving the group). stdout is flushed at least every 200 ms, so a
 * caller can watch a long-running consumer. Exit 0 unless the client failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

static const char *CLIENT = "rdkafka";

static struct {
	const char *mode, *bootstrap, *topic, *group, *client_id, *consumer, *run;
	const char *transactional, *config_file;
	long count, start, txn_size;
	double timeout, linger, rate;
	int idempotent, verbose;
} opt = {
	.bootstrap = "127.0.0.1:9092", .client_id = "rdk", .run = "0",
	.count = 100, .timeout = 60,
};

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void logf_(const char *fmt, ...) {
	va_list ap;
	fprintf(stderr, "rdk %s: ", opt.mode ? opt.mode : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- JSON output ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
	unsigned char c = s[0];
	size_t len, i;
	uint32_t cp;
	if (c < 0x80) return 1;
	if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
	else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
	else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
	else return 0;
	if (n < len) return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80) return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return len;
}

/* Writes a JSON string; NULL becomes null, invalid UTF-8 becomes U+FFFD. */
static void json_str(FILE *f, const void *data, size_t n) {
	const unsigned char *s = data;
	size_t i = 0;
	if (!data) { fputs("null", f); return; }
	fputc('"', f);
	while (i < n) {
		unsigned char c = s[i];
		size_t l;
		switch (c) {
		case '"': fputs("\\\"", f); i++; continue;
		case '\\': fputs("\\\\", f); i++; continue;
		case '\n': fputs("\\n", f); i++; continue;
		case '\r': fputs("\\r", f); i++; continue;
		case '\t': fputs("\\t", f); i++; continue;
		}
		if (c < 0x20 || c == 0x7F) { fprintf(f, "\\u%04x", c); i++; continue; }
		l = utf8_len(s + i, n - i);
		if (l == 0) { fputs("\\ufffd", f); i++; continue; }
		fwrite(s + i, 1, l, f);
		i += l;
	}
	fputc('"', f);
}

static void json_cstr(FILE *f, const char *s) { json_str(f, s, s ? strlen(s) : 0); }

static void emit_record(const char *ev, const char *topic, int32_t partition, int64_t offset,
			const void *key, size_t key_len, const void *val, size_t val_len) {
	printf("{\"ev\":\"%s\",\"client\":\"%s\",", ev, CLIENT);
	if (strcmp(ev, "consume") == 0) {
		fputs("\"consumer\":", stdout);
		json_cstr(stdout, opt.consumer);
		fputc(',', stdout);
	}
	fputs("\"topic\":", stdout);
	json_cstr(stdout, topic);
	printf(",\"partition\":%d,\"offset\":%lld,\"key\":", (int)partition, (long long)offset);
	json_str(stdout, key, key_len);
	fputs(",\"value\":", stdout);
	json_str(stdout, val, val_len);
	fputs("}\n", stdout);
}

static void emit_msg(const char *ev, const char *fmt, ...) {
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	logf_("%s: %s", ev, buf);
	printf("{\"ev\":\"%s\",\"client\":\"%s\",", ev, CLIENT);
	if (strcmp(ev, "rebalance") == 0) {
		fputs("\"consumer\":", stdout);
		json_cstr(stdout, opt.consumer);
		fputc(',', stdout);
	}
	fputs("\"msg\":", stdout);
	json_cstr(stdout, buf);
	fputs("}\n", stdout);
	fflush(stdout);
}

/* ---- configuration ---- */

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
	char err[512];
	if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
		logf_("config %s=%s: %s", k, v, err);
		exit(2);
	}
}

/* set_file applies a file of librdkafka "key=value" lines (# comments), e.g.
 * security.protocol, ssl.ca.location and the SASL settings: a password in a
 * file stays out of argv, which ps and test logs show. Values are not
 * echoed on error (one may be a password). */
static void set_file(rd_kafka_conf_t *conf, const char *path) {
	char line[4096], err[512];
	FILE *f = fopen(path, "r");
	if (!f) {
		logf_("config file %s: %s", path, strerror(errno));
		exit(2);
	}
	while (fgets(line, sizeof line, f)) {
		char *k = line, *v, *end;
		while (*k == ' ' || *k == '\t') k++;
		if (*k == '#' || *k == '\n' || *k == '\0') continue;
		end = k + strlen(k);
		while (end > k && (end[-1] == '\n' || end[-1] == '\r')) *--end = '\0';
		if (!(v = strchr(k, '='))) {
			logf_("config file %s: a line without '='", path);
			exit(2);
		}
		*v++ = '\0';
		if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
			logf_("config file %s: %s: %s", path, k, err);
			exit(2);
		}
	}
	fclose(f);
}

static rd_kafka_conf_t *base_conf(void) {
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	set(conf, "bootstrap.servers", opt.bootstrap);
	set(conf, "client.id", opt.client_id);
	if (opt.verbose) set(conf, "debug", "broker,topic,msg,protocol,cgrp,eos,security");
	if (opt.config_file) set_file(conf, opt.config_file);
	return conf;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
	(void)rk;
	fprintf(stderr, "rdk %s: [librdkafka %d %s] %s\n", opt.mode, level, fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
	(void)opaque;
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char buf[512];
		rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof buf);
		emit_msg("error", "fatal %s: %s", rd_kafka_err2name(orig), buf);
		interrupted = 1;
		return;
	}
	/* Transient broker/transport errors are retried by librdkafka. */
	logf_("client error %s: %s", rd_kafka_err2name(err), reason);
}

/* ---- produce ---- */

struct result {
	int done;
	rd_kafka_resp_err_t err;
	int32_t partition;
	int64_t offset;
};

static struct result *results;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
	(void)rk; (void)opaque;
	long i = (long)(intptr_t)m->_private;
	results[i].done = 1;
	results[i].err = m->err;
	results[i].partition = m->partition;
	results[i].offset = m->offset;
}

static int txn_ok(rd_kafka_error_t *e, const char *what) {
	if (!e) return 1;
	emit_msg("error", "%s: %s", what, rd_kafka_error_string(e));
	rd_kafka_error_destroy(e);
	return 0;
}

static int produce(void) {
	char err[512], key[64], val[256];
	rd_kafka_conf_t *conf = base_conf();
	rd_kafka_t *rk;
	long i, failed = 0;
	double deadline = now() + opt.timeout, started = now();
	int txn = opt.transactional != NULL;

	set(conf, "acks", "all");
	set(conf, "linger.ms", "5");
	set(conf, "enable.idempotence", opt.idempotent || txn ? "true" : "false");
	if (txn) set(conf, "transactional.id", opt.transactional);
	rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	rd_kafka_conf_set_log_cb(conf, log_cb);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	if (!rk) { logf_("rd_kafka_new: %s", err); return 2; }

	results = calloc(opt.count ? opt.count : 1, sizeof *results);
	if (txn && !txn_ok(rd_kafka_init_transactions(rk, (int)(opt.timeout * 1000)), "init transactions")) {
		rd_kafka_destroy(rk);
		return 1;
	}
	for (long first = 0; first < opt.count && !interrupted; first += opt.txn_size) {
		long last = first + opt.txn_size < opt.count ? first + opt.txn_size : opt.count;
		int chunk_ok = 1;
		if (txn && !txn_ok(rd_kafka_begin_transaction(rk), "begin transaction")) break;
		for (i = first; i < last && !interrupted; i++) {
			rd_kafka_resp_err_t e;
			int kl = snprintf(key, sizeof key, "k-%ld", opt.start + i);
			int vl = snprintf(val, sizeof val, "%s-%s-%ld", CLIENT, opt.run, opt.start + i);
			/* --rate: pace records (serving deliveries meanwhile), so a
			 * producer can span a cutover instead of finishing first. */
			while (opt.rate > 0 && now() < started + (double)i / opt.rate && !interrupted)
				rd_kafka_poll(rk, 1);
			for (;;) {
				e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(opt.topic),
						      RD_KAFKA_V_KEY(key, (size_t)kl),
						      RD_KAFKA_V_VALUE(val, (size_t)vl),
						      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
						      RD_KAFKA_V_OPAQUE((void *)(intptr_t)i), RD_KAFKA_V_END);
				if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
				rd_kafka_poll(rk, 50);
			}
			if (e) {
				emit_msg("error", "produce %s: %s", val, rd_kafka_err2str(e));
				results[i].done = 1;
				results[i].err = e;
			}
			rd_kafka_poll(rk, 0);
		}
		if (txn) {
			double left = deadline - now();
			chunk_ok = txn_ok(rd_kafka_commit_transaction(rk, left > 1 ? (int)(left * 1000) : 1000),
					  "commit transaction");
			if (!chunk_ok) txn_ok(rd_kafka_abort_transaction(rk, 30000), "abort transaction");
		} else {
			while (rd_kafka_outq_len(rk) > 0 && now() < deadline && !interrupted)
				rd_kafka_poll(rk, 100);
		}
		rd_kafka_poll(rk, 0);
		for (i = first; i < last; i++) {
			struct result *r = &results[i];
			snprintf(key, sizeof key, "k-%ld", opt.start + i);
			snprintf(val, sizeof val, "%s-%s-%ld", CLIENT, opt.run, opt.start + i);
			if (!r->done) {
				failed++;
				emit_msg("error", "send %s: no delivery report before the deadline", val);
			} else if (r->err) {
				failed++;
				emit_msg("error", "send %s: %s", val, rd_kafka_err2str(r->err));
			} else if (!chunk_ok) {
				failed++;
			} else if (r->offset < 0) {
				failed++;
				emit_msg("error", "send %s: delivery report without offset", val);
			} else {
				emit_record("ack", opt.topic, r->partition, r->offset, key, strlen(key), val, strlen(val));
			}
		}
		fflush(stdout);
		if (now() >= deadline) {
			emit_msg("error", "timeout");
			failed += opt.count - last;
			break;
		}
	}
	if (interrupted && failed == 0) failed = 1;
	rd_kafka_flush(rk, 5000);
	rd_kafka_destroy(rk);
	free(results);
	if (failed) {
		emit_msg("error", "%ld of %ld records were not acknowledged", failed, opt.count);
		return 1;
	}
	return 0;
}

/* ---- consume ---- */

static void describe(char *buf, size_t n, const rd_kafka_topic_partition_list_t *parts) {
	size_t off = 0;
	buf[0] = 0;
	for (int i = 0; i < parts->cnt && off < n; i++)
		off += snprintf(buf + off, n - off, "%s%s[%d]", i ? " " : "", parts->elems[i].topic,
				(int)parts->elems[i].partition);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque) {
	char buf[1024];
	int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	(void)opaque;
	describe(buf, sizeof buf, parts);
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		emit_msg("rebalance", "assigned %s", buf);
		if (cooperative) txn_ok(rd_kafka_incremental_assign(rk, parts), "incremental assign");
		else rd_kafka_assign(rk, parts);
	} else {
		emit_msg("rebalance", "revoked %s (%s)", buf, rd_kafka_err2name(err));
		/* Commit what was printed before giving the partitions away. */
		rd_kafka_resp_err_t ce = rd_kafka_commit(rk, NULL, 0);
		if (ce && ce != RD_KAFKA_RESP_ERR__NO_OFFSET)
			logf_("commit on revoke: %s", rd_kafka_err2str(ce));
		if (cooperative) txn_ok(rd_kafka_incremental_unassign(rk, parts), "incremental unassign");
		else rd_kafka_assign(rk, NULL);
	}
}

static int consume(void) {
	char err[512];
	rd_kafka_conf_t *conf = base_conf();
	rd_kafka_t *rk;
	rd_kafka_topic_partition_list_t *subs;
	rd_kafka_resp_err_t e;
	long seen = 0;
	double deadline = now() + opt.timeout, linger_until = 0, flushed = now();
	int rc = 0;

	set(conf, "group.id", opt.group);
	set(conf, "auto.offset.reset", "earliest");
	set(conf, "enable.auto.commit", "true");
	set(conf, "auto.commit.interval.ms", "1000");
	set(conf, "enable.auto.offset.store", "false");
	set(conf, "isolation.level", "read_committed");
	rd_kafka_conf_set_error_cb(conf, error_cb);
	rd_kafka_conf_set_log_cb(conf, log_cb);
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
	if (!rk) { logf_("rd_kafka_new: %s", err); return 2; }
	rd_kafka_poll_set_consumer(rk);

	subs = rd_kafka_topic_partition_list_new(1);
	{
		/* --topic a,b,c subscribes to each. */
		char *list = strdup(opt.topic), *save = NULL, *tok;
		for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			if (*tok) rd_kafka_topic_partition_list_add(subs, tok, RD_KAFKA_PARTITION_UA);
		free(list);
	}
	if (subs->cnt == 0) {
		logf_("--topic names no topic");
		rd_kafka_topic_partition_list_destroy(subs);
		rd_kafka_destroy(rk);
		return 2;
	}
	e = rd_kafka_subscribe(rk, subs);
	rd_kafka_topic_partition_list_destroy(subs);
	if (e) {
		emit_msg("error", "subscribe: %s", rd_kafka_err2str(e));
		rd_kafka_destroy(rk);
		return 1;
	}

	while (!interrupted && (opt.count > 0 || opt.linger > 0)) {
		double t = now();
		rd_kafka_message_t *m;
		if (t >= deadline) {
			logf_("timeout: consumed %ld of %ld", seen, opt.count);
			break;
		}
		if (seen >= opt.count && (opt.linger <= 0 || (linger_until > 0 && t >= linger_until)))
			break;
		if (t - flushed >= 0.2) {
			fflush(stdout);
			flushed = t;
		}
		m = rd_kafka_consumer_poll(rk, 200);
		if (!m) continue;
		if (m->err) {
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				emit_msg("error", "consume: %s", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		if (seen >= opt.count && opt.linger > 0 && linger_until > 0 && now() >= linger_until) {
			rd_kafka_message_destroy(m);
			break;
		}
		emit_record("consume", rd_kafka_topic_name(m->rkt), m->partition, m->offset,
			    m->key, m->key_len, m->payload, m->len);
		/* Only printed records are stored, hence committed (offset+1).
		 * rd_kafka_offset_store_message() needs librdkafka >= 2.1. */
		e = rd_kafka_offset_store(m->rkt, m->partition, m->offset);
		if (e) emit_msg("error", "offset store %s[%d]@%lld: %s", rd_kafka_topic_name(m->rkt),
				(int)m->partition, (long long)m->offset, rd_kafka_err2str(e));
		rd_kafka_message_destroy(m);
		seen++;
		if (seen == opt.count) {
			fflush(stdout);
			if (opt.linger > 0) linger_until = now() + opt.linger;
		}
	}
	fflush(stdout);
	e = rd_kafka_commit(rk, NULL, 0);
	if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
		emit_msg("error", "final commit: %s", rd_kafka_err2str(e));
		rc = 1;
	}
	e = rd_kafka_consumer_close(rk);
	if (e) {
		emit_msg("error", "close: %s", rd_kafka_err2str(e));
		rc = 1;
	}
	rd_kafka_destroy(rk);
	logf_("consumed %ld records", seen);
	return rc;
}

/* ---- main ---- */

static void usage(void) {
	fprintf(stderr,
		"usage: rdk produce|consume [--bootstrap H:P] --topic T [--count N] [--group G]\n"
		"           [--client-id ID] [--consumer NAME] [--run R] [--start I] [--timeout SEC]\n"
		"           [--linger SEC] [--idempotent[=true|false]] [--transactional TXID]\n"
		"           [--txn-size N] [--rate RECORDS_PER_SEC] [--config FILE] [-v]\n"
		"  --config FILE: librdkafka key=value lines (TLS, SASL), applied after the defaults\n");
	exit(2);
}

static int parse_bool(const char *s) {
	if (!s || !strcmp(s, "true") || !strcmp(s, "1")) return 1;
	if (!strcmp(s, "false") || !strcmp(s, "0")) return 0;
	fprintf(stderr, "rdk: bad boolean %s\n", s);
	usage();
	return 0;
}

int main(int argc, char **argv) {
	static struct option longopts[] = {
		{"mode", required_argument, 0, 'm'},
		{"bootstrap", required_argument, 0, 'b'},
		{"topic", required_argument, 0, 't'},
		{"count", required_argument, 0, 'n'},
		{"group", required_argument, 0, 'g'},
		{"client-id", required_argument, 0, 'i'},
		{"consumer", required_argument, 0, 'c'},
		{"run", required_argument, 0, 'r'},
		{"start", required_argument, 0, 's'},
		{"timeout", required_argument, 0, 'T'},
		{"linger", required_argument, 0, 'L'},
		{"idempotent", optional_argument, 0, 'I'},
		{"transactional", required_argument, 0, 'X'},
		{"txn-size", required_argument, 0, 'S'},
		{"rate", required_argument, 0, 'R'},
		{"config", required_argument, 0, 'C'},
		{"verbose", no_argument, 0, 'v'},
		{"v", no_argument, 0, 'v'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c;
	struct sigaction sa;

	if (argc > 1 && argv[1][0] != '-') {
		opt.mode = argv[1];
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	while ((c = getopt_long_only(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': opt.mode = optarg; break;
		case 'b': opt.bootstrap = optarg; break;
		case 't': opt.topic = optarg; break;
		case 'n': opt.count = atol(optarg); break;
		case 'g': opt.group = optarg; break;
		case 'i': opt.client_id = optarg; break;
		case 'c': opt.consumer = optarg; break;
		case 'r': opt.run = optarg; break;
		case 's': opt.start = atol(optarg); break;
		case 'T': opt.timeout = atof(optarg); break;
		case 'L': opt.linger = atof(optarg); break;
		case 'I': opt.idempotent = parse_bool(optarg); break;
		case 'X': opt.transactional = optarg; break;
		case 'S': opt.txn_size = atol(optarg); break;
		case 'R': opt.rate = atof(optarg); break;
		case 'C': opt.config_file = optarg; break;
		case 'v': opt.verbose = 1; break;
		default: usage();
		}
	}
	if (optind < argc || !opt.mode || !opt.topic || opt.count < 0 ||
	    (strcmp(opt.mode, "produce") && strcmp(opt.mode, "consume")) ||
	    (!strcmp(opt.mode, "consume") && !opt.group))
		usage();
	if (!opt.consumer) opt.consumer = opt.client_id;
	if (opt.txn_size <= 0) opt.txn_size = opt.count > 0 ? opt.count : 1;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	logf_("librdkafka %s", rd_kafka_version_str());

	return !strcmp(opt.mode, "produce") ? produce() : consume();
}
