#!/usr/bin/env node
// kafkajs driver for the kproxy client matrix.
//
//   node driver.js produce --bootstrap 127.0.0.1:9092 --topic t --count 500 --run 0
//   node driver.js consume --bootstrap 127.0.0.1:9092 --topic t --group g --count 500
//
// Options may be spelled -opt or --opt, "--opt value" or "--opt=value"; the
// mode may also be given as --mode. Prints the kproxy checker's JSON lines on
// stdout (ack / consume / error / rebalance); kafkajs logs go to stderr.
//
// produce: --count records, key k-<i>, value kafkajs-<run>-<i> (i from
// --start), acks=-1, sent in batches of --batch messages. producer.send()
// returns one baseOffset per partition, so the driver records the partition the
// (Java-compatible murmur2) partitioner chose for each message and prints
// offset = baseOffset + index of the message among that partition's messages in
// the same send() call (kafkajs keeps message order per partition).
//
// consume: consumer group --group, eachMessage, autoCommit off: offsets of
// printed records are committed every 100 records and at the end, then the
// consumer disconnects (leaving the group).
'use strict'

const { Kafka, logLevel, Partitioners } = require('kafkajs')

const CLIENT = 'kafkajs'

function usage (msg) {
  if (msg) process.stderr.write(`driver.js: ${msg}\n`)
  process.stderr.write(
    'usage: node driver.js produce|consume [--bootstrap H:P] --topic T [--count N] [--group G]\n' +
    '         [--client-id ID] [--consumer NAME] [--run R] [--start I] [--timeout SEC]\n' +
    '         [--linger SEC] [--idempotent[=true|false]] [--transactional TXID] [--txn-size N]\n' +
    '         [--batch N] [--tls-ca FILE] [--sasl MECHANISM --sasl-user U --sasl-password-file F] [-v]\n' +
    '  --sasl: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; the password is read from the file (never argv)\n')
  process.exit(2)
}

function parseArgs (argv) {
  const o = {
    mode: '',
    bootstrap: '127.0.0.1:9092',
    topic: '',
    group: '',
    'client-id': 'kafkajs-driver',
    consumer: '',
    run: '0',
    count: 100,
    start: 0,
    timeout: 60,
    linger: 0,
    idempotent: false,
    transactional: '',
    'txn-size': 0,
    batch: 100,
    'tls-ca': '',
    sasl: '',
    'sasl-user': '',
    'sasl-password-file': '',
    v: false
  }
  const bools = new Set(['idempotent', 'v', 'verbose'])
  const nums = new Set(['count', 'start', 'timeout', 'linger', 'txn-size', 'batch'])
  const args = argv.slice()
  if (args.length && !args[0].startsWith('-')) o.mode = args.shift()
  while (args.length) {
    const a = args.shift()
    if (!a.startsWith('-')) usage(`unexpected argument ${a}`)
    let name = a.replace(/^--?/, '')
    let val
    const eq = name.indexOf('=')
    if (eq >= 0) {
      val = name.slice(eq + 1)
      name = name.slice(0, eq)
    }
    if (name === 'verbose') name = 'v'
    if (name === 'h' || name === 'help') usage()
    if (!(name in o)) usage(`unknown option ${a}`)
    if (bools.has(name)) {
      if (val === undefined) val = 'true'
      if (val !== 'true' && val !== 'false') usage(`bad boolean ${a}`)
      o[name] = val === 'true'
      continue
    }
    if (val === undefined) {
      if (!args.length) usage(`${a} needs a value`)
      val = args.shift()
    }
    if (nums.has(name)) {
      const n = Number(val)
      if (!Number.isFinite(n) || n < 0) usage(`bad number ${a} ${val}`)
      o[name] = n
    } else {
      o[name] = val
    }
  }
  if (o.mode !== 'produce' && o.mode !== 'consume') usage('mode must be produce or consume')
  if (!o.topic) usage('--topic is required')
  if (o.mode === 'consume' && !o.group) usage('--group is required to consume')
  if (!o.consumer) o.consumer = o['client-id']
  if (!o['txn-size']) o['txn-size'] = o.count || 1
  if (!o.batch) o.batch = 1
  if (o.sasl && !['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'].includes(o.sasl)) usage('--sasl must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512')
  if (o.sasl && (!o['sasl-user'] || !o['sasl-password-file'])) usage('--sasl needs --sasl-user and --sasl-password-file')
  return o
}

const opt = parseArgs(process.argv.slice(2))

function log (msg) {
  process.stderr.write(`kafkajs ${opt.mode}: ${new Date().toISOString()} ${msg}\n`)
}

// stdout carries only events; kafkajs logs go to stderr.
const out = []
function emit (obj) {
  out.push(JSON.stringify(obj) + '\n')
  if (out.length >= 256 || (obj.ev !== 'ack' && obj.ev !== 'consume')) flush()
}
function flush () {
  if (out.length) {
    process.stdout.write(out.join(''))
    out.length = 0
  }
}
function emitError (msg) {
  log(`error: ${msg}`)
  emit({ ev: 'error', client: CLIENT, msg: String(msg) })
}
function str (buf) {
  return buf === null || buf === undefined ? null : buf.toString('utf8')
}

const stderrLogCreator = () => ({ namespace, level, label, log: entry }) => {
  const { message, timestamp, ...extra } = entry
  process.stderr.write(`[kafkajs ${label} ${namespace}] ${message} ${JSON.stringify(extra)}\n`)
}

// TLS and SASL (kafkajs names the mechanisms in lower case).
function securityOptions () {
  const fs = require('fs')
  const o = {}
  if (opt['tls-ca']) o.ssl = { ca: [fs.readFileSync(opt['tls-ca'], 'utf8')] }
  if (opt.sasl) {
    o.sasl = {
      mechanism: opt.sasl.toLowerCase(),
      username: opt['sasl-user'],
      password: fs.readFileSync(opt['sasl-password-file'], 'utf8').trim()
    }
  }
  return o
}

const kafka = new Kafka({
  ...securityOptions(),
  clientId: opt['client-id'],
  brokers: opt.bootstrap.split(',').map(s => s.trim()).filter(Boolean),
  logLevel: opt.v ? logLevel.DEBUG : logLevel.WARN,
  logCreator: stderrLogCreator,
  retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 2000 }
})

function withTimeout (promise, what, seconds) {
  let timer
  const t = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timeout after ${seconds}s`)), seconds * 1000)
  })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

async function produce () {
  // Remember which partition the default partitioner picked for each value.
  const partitionOf = new Map()
  const createPartitioner = () => {
    const p = Partitioners.DefaultPartitioner()
    return args => {
      const partition = p(args)
      partitionOf.set(str(args.message.value), partition)
      return partition
    }
  }
  const txn = !!opt.transactional
  const producer = kafka.producer({
    createPartitioner,
    allowAutoTopicCreation: true,
    idempotent: opt.idempotent || txn,
    maxInFlightRequests: opt.idempotent || txn ? 1 : undefined,
    transactionalId: txn ? opt.transactional : undefined
  })
  await producer.connect()
  const n = opt.count
  let failed = 0
  const recs = []
  for (let i = 0; i < n; i++) {
    const idx = opt.start + i
    recs.push({ key: `k-${idx}`, value: `${CLIENT}-${opt.run}-${idx}` })
  }
  try {
    for (let first = 0; first < n; first += opt['txn-size']) {
      const chunk = recs.slice(first, first + opt['txn-size'])
      const acks = []
      let chunkFailed = 0
      const sender = txn ? await producer.transaction() : producer
      for (let b = 0; b < chunk.length; b += opt.batch) {
        const batch = chunk.slice(b, b + opt.batch)
        let meta
        try {
          meta = await sender.send({ topic: opt.topic, acks: -1, messages: batch.map(r => ({ key: r.key, value: r.value })) })
        } catch (e) {
          chunkFailed += batch.length
          emitError(`send ${batch[0].value}..${batch[batch.length - 1].value}: ${e.message}`)
          if (txn) break
          continue
        }
        const base = new Map()
        for (const m of meta) {
          if (m.errorCode !== 0) {
            emitError(`partition ${m.partition}: error code ${m.errorCode}`)
            continue
          }
          base.set(m.partition, BigInt(m.baseOffset))
        }
        const seen = new Map()
        for (const r of batch) {
          const p = partitionOf.get(r.value)
          const k = seen.get(p) || 0n
          seen.set(p, k + 1n)
          if (p === undefined || !base.has(p) || base.get(p) < 0n) {
            chunkFailed++
            emitError(`send ${r.value}: no offset for partition ${p}`)
            continue
          }
          acks.push({ ev: 'ack', client: CLIENT, topic: opt.topic, partition: p, offset: Number(base.get(p) + k), key: r.key, value: r.value })
        }
      }
      if (txn) {
        try {
          if (chunkFailed) {
            await sender.abort()
          } else {
            await sender.commit()
          }
        } catch (e) {
          emitError(`end transaction: ${e.message}`)
          chunkFailed = chunk.length
        }
        if (chunkFailed) {
          failed += chunk.length
          continue
        }
      }
      failed += chunkFailed
      acks.forEach(emit)
    }
  } finally {
    flush()
    await producer.disconnect()
  }
  if (failed) {
    emitError(`${failed} of ${n} records were not acknowledged`)
    return 1
  }
  return 0
}

async function consume () {
  const consumer = kafka.consumer({
    groupId: opt.group,
    allowAutoTopicCreation: true,
    readUncommitted: false,
    maxWaitTimeInMs: 250,
    sessionTimeout: 30000,
    heartbeatInterval: 3000
  })
  const { GROUP_JOIN, CRASH } = consumer.events
  consumer.on(GROUP_JOIN, e => {
    emit({ ev: 'rebalance', client: CLIENT, consumer: opt.consumer, msg: `assigned ${JSON.stringify(e.payload.memberAssignment)} generation ${e.payload.generationId}` })
  })
  consumer.on(CRASH, e => emitError(`crash: ${e.payload.error && e.payload.error.message}`))

  let seen = 0
  let lingerUntil = 0
  let resolveDone
  const done = new Promise(resolve => { resolveDone = resolve })
  if (opt.count === 0 && !opt.linger) resolveDone()
  const pending = new Map() // "topic\0partition" -> next offset to commit
  let sinceCommit = 0
  let commitErr = null
  const commit = async () => {
    if (!pending.size) return
    const offsets = []
    for (const [k, off] of pending) {
      const [topic, partition] = k.split('\0')
      offsets.push({ topic, partition: Number(partition), offset: off.toString() })
    }
    pending.clear()
    try {
      await consumer.commitOffsets(offsets)
    } catch (e) {
      commitErr = e
      emitError(`commit: ${e.message}`)
      // Keep them for the next try.
      for (const o of offsets) {
        const k = `${o.topic}\0${o.partition}`
        if (!pending.has(k)) pending.set(k, BigInt(o.offset))
      }
    }
  }
  const take = () => {
    if (seen >= opt.count) {
      if (opt.linger <= 0 || (lingerUntil && Date.now() >= lingerUntil)) return false
    }
    seen++
    if (seen === opt.count) {
      if (opt.linger > 0) {
        lingerUntil = Date.now() + opt.linger * 1000
        setTimeout(resolveDone, opt.linger * 1000)
      } else {
        resolveDone()
      }
    }
    return true
  }

  await consumer.connect()
  await consumer.subscribe({ topics: [opt.topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      if (!take()) return
      emit({ ev: 'consume', client: CLIENT, consumer: opt.consumer, topic, partition, offset: Number(message.offset), key: str(message.key), value: str(message.value) })
      pending.set(`${topic}\0${partition}`, BigInt(message.offset) + 1n)
      if (++sinceCommit >= 100) {
        sinceCommit = 0
        flush()
        await commit()
      }
    }
  })
  let timer
  const timedOut = new Promise(resolve => { timer = setTimeout(() => resolve(true), opt.timeout * 1000) })
  const to = await Promise.race([done.then(() => false), timedOut])
  clearTimeout(timer)
  if (to) log(`timeout: consumed ${seen} of ${opt.count}`)
  flush()
  commitErr = null
  await commit()
  await consumer.disconnect()
  log(`consumed ${seen} records`)
  flush()
  return commitErr ? 1 : 0
}

async function main () {
  const started = Date.now()
  let rc
  try {
    // consume() stops reading at --timeout itself and then commits and
    // leaves; allow time for that.
    rc = opt.mode === 'produce'
      ? await withTimeout(produce(), 'produce', opt.timeout)
      : await withTimeout(consume(), 'consume', opt.timeout + opt.linger + 30)
  } catch (e) {
    emitError(e.stack || e.message)
    rc = 1
  }
  flush()
  log(`finished in ${Date.now() - started}ms`)
  // Flush stdout before exiting (process.exit can truncate piped output).
  process.stdout.write('', () => process.exit(rc))
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    emitError(`interrupted by ${sig}`)
    flush()
    process.exit(130)
  })
}

main()
