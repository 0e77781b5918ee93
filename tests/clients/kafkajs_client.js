#!/usr/bin/env node
// kafkajs against a Kafka-compatible broker: create a topic with the admin API, produce the
// common record set (idempotent producer), read it all back partition by partition from offset 0
// without a consumer group (see consume()), and check ListOffsets (earliest, latest, by
// timestamp). The data model and output contract are the Python programs' (see
// common.py): record i goes to partition i % P at offset i / P with key "key-<i>", value
// "value-<i>-" + filler (NULL when i % 1000 == 500), headers i/client/empty and CreateTime
// base_ts + i. Prints "SUMMARY ... OK" and exits 0, or "FAIL: ..." on stderr and exits 1.
//
//   node kafkajs_client.js --bootstrap 127.0.0.1:9092 --topic t [--partitions 4]
//       [--records 10000] [--compression none|gzip|snappy|lz4|zstd] [--mode all|produce|consume]
//       [--base-ts MS] [--timeout SECONDS]
//   node kafkajs_client.js --mode group ...   (consumer-group test, see groupMode())
//   node kafkajs_client.js --mode admin ...   (topic admin APIs, see adminMode())
'use strict'

const CLIENT = 'kafkajs'

function fail(msg, code = 1) {
  process.stderr.write(`FAIL: ${msg}\n`)
  process.exit(code)
}

let kafkajs
try {
  kafkajs = require('kafkajs')
} catch (e) {
  fail(`kafkajs is not installed (${e.message}); run \`bash .ci/run\` to install the test clients`, 3)
}
const { Kafka, CompressionTypes, CompressionCodecs, ConfigResourceTypes, logLevel } = kafkajs

class Mismatch extends Error {}

// ---- arguments -------------------------------------------------------------------------------

function parseArgs(argv) {
  const args = {
    partitions: 4, records: 10000, compression: 'none', mode: 'all', baseTs: null, timeout: 60,
    group: null, consumers: 2, producedBy: CLIENT,
  }
  const names = {
    '--bootstrap': 'bootstrap', '--topic': 'topic', '--partitions': 'partitions', '--records': 'records',
    '--compression': 'compression', '--mode': 'mode', '--base-ts': 'baseTs', '--timeout': 'timeout',
    '--group': 'group', '--consumers': 'consumers', '--produced-by': 'producedBy',
  }
  for (let i = 2; i < argv.length; i += 2) {
    const key = names[argv[i]]
    if (!key || i + 1 >= argv.length) fail(`usage: bad argument ${argv[i]}`, 2)
    args[key] = argv[i + 1]
  }
  for (const k of ['partitions', 'records', 'timeout', 'consumers']) args[k] = Number(args[k])
  if (!args.bootstrap || !args.topic) fail('usage: --bootstrap and --topic are required', 2)
  if (!['none', 'gzip', 'snappy', 'lz4', 'zstd'].includes(args.compression)) fail(`bad --compression`, 2)
  if (!['all', 'produce', 'consume', 'group', 'admin'].includes(args.mode)) fail(`bad --mode`, 2)
  if (args.mode === 'consume' && args.baseTs === null) fail('--mode consume needs --base-ts', 2)
  args.baseTs = args.baseTs === null ? Date.now() - 600000 : Number(args.baseTs)
  if (!(args.partitions >= 1 && args.records >= args.partitions)) fail('need partitions >= 1, records >= partitions', 2)
  return args
}

// ---- codecs: kafkajs ships gzip only; the others are pure-JS/wasm packages pinned in package.json

function registerCodecs() {
  const SnappyCodec = require('kafkajs-snappy')
  const lz4 = require('lz4js')
  CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
  CompressionCodecs[CompressionTypes.LZ4] = () => ({
    async compress(encoder) { return Buffer.from(lz4.compress(encoder.buffer)) },
    async decompress(buffer) { return Buffer.from(lz4.decompress(buffer)) },
  })
  const zstdReady = new Promise(resolve => require('zstd-codec').ZstdCodec.run(z => resolve(z)))
  CompressionCodecs[CompressionTypes.ZSTD] = () => ({
    async compress(encoder) {
      const z = await zstdReady
      return Buffer.from(new z.Simple().compress(encoder.buffer, 3))
    },
    async decompress(buffer) {
      // Streaming, not Simple: frames from librdkafka and the JVM carry no content size.
      const z = await zstdReady
      const out = new z.Streaming().decompress(buffer)
      if (!out) throw new Error('zstd: cannot decompress batch')
      return Buffer.from(out)
    },
  })
}

const codecOf = {
  none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4, zstd: CompressionTypes.ZSTD,
}

// ---- data model (same as common.py) ---------------------------------------------------------

const FILLER = Buffer.from('abcdefghijklmnopqrstuvwxyz'.repeat(8))
const keyOf = i => Buffer.from(`key-${i}`)
const valueOf = i => (i % 1000 === 500 ? null
  : Buffer.concat([Buffer.from(`value-${i}-`), FILLER.subarray(0, 16 + (i * 7) % 150)]))
const headersOf = (i, client = CLIENT) => [['i', Buffer.from(String(i))], ['client', Buffer.from(client)], ['empty', Buffer.alloc(0)]]
const countIn = (p, n, P) => (p < n ? Math.floor((n - 1 - p) / P) + 1 : 0)
const indexAt = (p, offset, P) => p + offset * P

function lookupTimestamps(n, base) {
  return [base - 10000, base, base + 1, base + Math.floor(n / 3), base + Math.floor(n / 2) + 1, base + n - 1,
    base + n + 10000]
}

function firstOffsetAtOrAfter(p, ts, n, P, base) {
  const k = Math.max(ts - base, 0)
  const i = k + (((p - k) % P) + P) % P
  return i >= n ? -1 : Math.floor(i / P)
}

function show(b) {
  if (b === null || b === undefined) return 'NULL'
  const s = b.toString('latin1')
  return JSON.stringify(s.length > 40 ? s.slice(0, 40) + '...' : s) + ` (${b.length} bytes)`
}

const sameBytes = (a, b) => (a === null || a === undefined ? b === null : b !== null && Buffer.compare(a, b) === 0)

class Checker {
  constructor(n, P, baseTs, producedBy = CLIENT) {
    this.n = n; this.P = P; this.baseTs = baseTs; this.producedBy = producedBy; this.consumed = 0
    this.next = new Array(P).fill(0)
    this.expected = [...Array(P).keys()].map(p => countIn(p, n, P))
  }
  done() { return this.next.every((v, p) => v === this.expected[p]) }
  progress() { return this.next.map((v, p) => `p${p}: ${v}/${this.expected[p]}`).join(', ') }
  check(partition, m) {
    const p = partition
    const offset = Number(m.offset)
    if (!(p >= 0 && p < this.P)) throw new Mismatch(`record from partition ${p}, topic has ${this.P}`)
    if (offset !== this.next[p]) {
      throw new Mismatch(`partition ${p}: got offset ${offset}, want ${this.next[p]} (out of order, duplicated or lost)`)
    }
    if (offset >= this.expected[p]) throw new Mismatch(`partition ${p}: extra record at offset ${offset}`)
    const i = indexAt(p, offset, this.P)
    const where = `partition ${p} offset ${offset} (record ${i})`
    if (!sameBytes(m.key, keyOf(i))) throw new Mismatch(`${where}: key ${show(m.key)}, want ${show(keyOf(i))}`)
    if (!sameBytes(m.value, valueOf(i))) throw new Mismatch(`${where}: value ${show(m.value)}, want ${show(valueOf(i))}`)
    // kafkajs gives headers as an object; a repeated name would become an array.
    const want = headersOf(i, this.producedBy)
    const got = m.headers || {}
    const gotNames = Object.keys(got)
    if (gotNames.length !== want.length || !want.every(([k, v]) => sameBytes(got[k], v))) {
      const gotStr = gotNames.map(k => `${k}=${show(got[k])}`).join(', ')
      throw new Mismatch(`${where}: headers {${gotStr}}, want ${want.map(([k, v]) => `${k}=${show(v)}`).join(', ')}`)
    }
    if (Number(m.timestamp) !== this.baseTs + i) {
      throw new Mismatch(`${where}: timestamp ${m.timestamp}, want ${this.baseTs + i}`)
    }
    this.next[p] += 1
    this.consumed += 1
  }
}

// ---- steps ------------------------------------------------------------------------------------

function kafkaFor(args) {
  return new Kafka({
    clientId: CLIENT, brokers: [args.bootstrap], logLevel: logLevel.ERROR,
    retry: { retries: 8, initialRetryTime: 100 }, connectionTimeout: 5000, requestTimeout: 30000,
  })
}

async function createTopic(kafka, args) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const created = await admin.createTopics({
      topics: [{ topic: args.topic, numPartitions: args.partitions, replicationFactor: 1 }], waitForLeaders: true,
    })
    if (!created) throw new Mismatch(`CreateTopics ${args.topic}: topic already existed`)
    const md = await admin.fetchTopicMetadata({ topics: [args.topic] })
    const parts = md.topics[0].partitions
    if (parts.length !== args.partitions) {
      throw new Mismatch(`Metadata for ${args.topic}: ${parts.length} partitions, want ${args.partitions}`)
    }
  } finally {
    await admin.disconnect()
  }
}

// Produces records first..end-1 of the record set (default: all of it).
async function produce(kafka, args, first = 0, end = args.records) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
  await producer.connect()
  try {
    const chunk = 2000
    for (let start = first; start < end; start += chunk) {
      const messages = []
      for (let i = start; i < Math.min(start + chunk, end); i++) {
        messages.push({
          key: keyOf(i), value: valueOf(i), partition: i % args.partitions,
          headers: Object.fromEntries(headersOf(i)), timestamp: String(args.baseTs + i),
        })
      }
      const acks = await producer.send({ topic: args.topic, acks: -1, compression: codecOf[args.compression], messages })
      for (const a of acks) {
        if (a.errorCode !== 0) throw new Mismatch(`produce: partition ${a.partition} error code ${a.errorCode}`)
      }
    }
  } finally {
    await producer.disconnect()
  }
}

// kafkajs's Consumer always joins a group (there is no assign()), so the group-free read uses
// its lower-level cluster client: one Fetch request at a time to the partition leaders, as the
// consumer would send, starting at offset 0. This exercises Fetch + record decoding of kafkajs
// without depending on the group coordinator (issue 4).
async function consume(kafka, args) {
  const checker = new Checker(args.records, args.partitions, args.baseTs, args.producedBy)
  const createCluster = clusterOf(kafka)
  await createCluster.connect()
  try {
    await createCluster.addTargetTopic(args.topic)
    await createCluster.refreshMetadata()
    const deadline = { last: Date.now() }
    while (!checker.done()) {
      const byLeader = createCluster.findLeaderForPartitions(args.topic, [...Array(args.partitions).keys()])
      let got = 0
      for (const [leaderId, partitions] of Object.entries(byLeader)) {
        const broker = await createCluster.findBroker({ nodeId: leaderId })
        const response = await broker.fetch({
          replicaId: -1, isolationLevel: 1, maxWaitTime: 200, minBytes: 1, maxBytes: 10485760,
          topics: [{
            topic: args.topic,
            partitions: partitions.filter(p => checker.next[p] < checker.expected[p]).map(p => ({
              partition: p, fetchOffset: String(checker.next[p]), maxBytes: 1048576,
            })),
          }].filter(t => t.partitions.length > 0),
        })
        for (const topic of response.responses) {
          for (const part of topic.partitions) {
            if (part.errorCode !== 0) {
              throw new Mismatch(`fetch partition ${part.partition}: error code ${part.errorCode}`)
            }
            for (const m of part.messages) {
              // A batch may start before the fetch offset; skip what was already checked.
              if (Number(m.offset) < checker.next[part.partition]) continue
              checker.check(part.partition, m)
              got++
            }
          }
        }
      }
      if (got > 0) deadline.last = Date.now()
      if (Date.now() - deadline.last > args.timeout * 1000) {
        throw new Mismatch(`no progress for ${args.timeout}s while consuming (${checker.progress()})`)
      }
    }
  } finally {
    await createCluster.disconnect()
  }
  return checker.consumed
}

// The cluster client kafkajs builds for its consumers and producers, made by the same private
// factory kafka.consumer() calls (so it has the client's config); only its methods are used.
function clusterOf(kafka) {
  const sym = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  if (!sym) throw new Error('kafkajs internals changed: no createCluster factory (kafkajs 2.2.4 is pinned)')
  return kafka[sym]({ isolationLevel: 1, allowAutoTopicCreation: false })
}

async function listOffsets(kafka, args) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const got = new Map()
    const want = new Map()
    for (const o of await admin.fetchTopicOffsets(args.topic)) {
      got.set(`p${o.partition} earliest`, Number(o.low))
      got.set(`p${o.partition} latest`, Number(o.high))
    }
    for (let p = 0; p < args.partitions; p++) {
      want.set(`p${p} earliest`, 0)
      want.set(`p${p} latest`, countIn(p, args.records, args.partitions))
    }
    for (const ts of lookupTimestamps(args.records, args.baseTs)) {
      for (const o of await admin.fetchTopicOffsetsByTimestamp(args.topic, ts)) {
        got.set(`p${o.partition} ts=${ts - args.baseTs}`, Number(o.offset))
      }
      for (let p = 0; p < args.partitions; p++) {
        let w = firstOffsetAtOrAfter(p, ts, args.records, args.partitions, args.baseTs)
        // kafkajs answers a lookup past the last timestamp with the high watermark, not -1.
        if (w === -1) w = countIn(p, args.records, args.partitions)
        want.set(`p${p} ts=${ts - args.baseTs}`, w)
      }
    }
    const bad = [...want].filter(([k, v]) => got.get(k) !== v).map(([k, v]) => `${k}: got ${got.get(k)}, want ${v}`)
    if (bad.length) throw new Mismatch(`ListOffsets answers differ: ${bad.slice(0, 12).join('; ')}`)
  } finally {
    await admin.disconnect()
  }
}

// ---- consumer group (issue 4) -------------------------------------------------------------------
// `--consumers` kafkajs consumers of one group subscribe first; once their assignments are
// disjoint and cover every partition the record set is produced, and they read it through
// subscribe/run with explicit commits: every record exactly once, every consumer reads some.
// Then one leaves, the rest take over its partitions and read a second record set (records N to
// 2N-1); the group's committed offsets end at the high watermarks.
async function groupMode(kafka, args) {
  const group = args.group || `${args.topic}-group`
  await createTopic(kafka, args)
  const seen = new Map()
  let dup = null
  const consumers = []
  const assignment = new Map()
  for (let c = 0; c < args.consumers; c++) {
    const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 200 })
    consumer.on(consumer.events.GROUP_JOIN, e => assignment.set(c, e.payload.memberAssignment[args.topic] || []))
    await consumer.connect()
    await consumer.subscribe({ topic: args.topic, fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
        for (const m of batch.messages) {
          const k = `${batch.partition}:${m.offset}`
          if (seen.has(k) && dup === null) dup = `${k} read by consumer ${seen.get(k)} and ${c}`
          seen.set(k, c)
          resolveOffset(m.offset)
        }
        if (batch.messages.length) {
          const last = batch.messages[batch.messages.length - 1]
          await consumer.commitOffsets([{ topic: args.topic, partition: batch.partition, offset: String(Number(last.offset) + 1) }])
        }
        await heartbeat()
      },
    })
    consumers.push(consumer)
  }
  const balanced = () => {
    if (assignment.size < args.consumers) return false
    const held = [...assignment.values()].flat().sort((a, b) => a - b)
    return held.length === args.partitions && held.every((p, i) => p === i) &&
      [...assignment.values()].every(ps => ps.length > 0)
  }
  await waitFor(() => balanced(), args.timeout, () => `a balanced assignment: ${JSON.stringify([...assignment])}`)
  await produce(kafka, args)
  const readAll = async total => {
    let last = -1
    let lastChange = Date.now()
    while (seen.size < total && !dup) {
      if (seen.size !== last) { last = seen.size; lastChange = Date.now() }
      if (Date.now() - lastChange > args.timeout * 1000) break
      await new Promise(r => setTimeout(r, 50))
    }
    if (dup) throw new Mismatch(`record read twice: ${dup}`)
    if (seen.size !== total) throw new Mismatch(`group read ${seen.size} of ${total} records`)
  }
  await readAll(args.records)
  const users = new Set([...seen.values()])
  if (users.size !== args.consumers) {
    throw new Mismatch(`only consumer(s) ${[...users]} read records although the partitions were split ${JSON.stringify([...assignment])}`)
  }
  // The last consumer leaves (LeaveGroup); the others take its partitions over and read a second
  // batch with nothing read twice.
  const leaving = consumers.length - 1
  await consumers[leaving].disconnect()
  assignment.delete(leaving)
  const staying = () => [...assignment.entries()].filter(([c]) => c !== leaving)
  await waitFor(() => staying().flatMap(([, ps]) => ps).sort((a, b) => a - b).join() ===
    [...Array(args.partitions).keys()].join(), args.timeout,
  () => `the remaining consumers to take over every partition: ${JSON.stringify(staying())}`)
  await produce(kafka, args, args.records, 2 * args.records)
  await readAll(2 * args.records)
  for (const c of consumers.slice(0, leaving)) await c.disconnect()
  const admin = kafka.admin()
  await admin.connect()
  try {
    const committed = await admin.fetchOffsets({ groupId: group, topics: [args.topic] })
    for (const p of committed[0].partitions) {
      const want = countIn(p.partition, 2 * args.records, args.partitions)
      if (Number(p.offset) !== want) throw new Mismatch(`committed offset p${p.partition}: ${p.offset}, want ${want}`)
    }
  } finally {
    await admin.disconnect()
  }
  return seen.size
}

// Polls `cond` every 50 ms until true, or fails after `seconds` with what(). Polling, not a sleep
// standing in for an event: kafkajs reports joins through callbacks we can only observe.
async function waitFor(cond, seconds, what) {
  const deadline = Date.now() + seconds * 1000
  while (!cond()) {
    if (Date.now() > deadline) throw new Mismatch(`timed out after ${seconds}s waiting for ${what()}`)
    await new Promise(r => setTimeout(r, 50))
  }
}

// ---- topic admin APIs ------------------------------------------------------------------------
// CreateTopics with a config (and again: false), DescribeConfigs, the legacy AlterConfigs (which
// only kafkajs and kafka-python still send), CreatePartitions, DeleteRecords, DescribeCluster and
// DeleteTopics, each checked through another request.
async function adminMode(kafka, args) {
  const t = args.topic
  const admin = kafka.admin()
  await admin.connect()
  const retentionOf = async () => {
    const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: t }], includeSynonyms: false })
    const entries = d.resources[0].configEntries
    const e = entries.find(c => c.configName === 'retention.ms')
    if (d.resources[0].errorCode !== 0 || !e) {
      throw new Mismatch(`DescribeConfigs ${t}: error ${d.resources[0].errorCode}, entries ${entries.map(c => c.configName)}`)
    }
    return e.configValue
  }
  const partitionsOf = async () => (await admin.fetchTopicMetadata({ topics: [t] })).topics[0].partitions.length
  try {
    const created = await admin.createTopics({
      topics: [{ topic: t, numPartitions: 3, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
      waitForLeaders: true,
    })
    if (!created) throw new Mismatch(`CreateTopics ${t}: reported as already existing`)
    if (await admin.createTopics({ topics: [{ topic: t, numPartitions: 3 }] })) {
      throw new Mismatch(`CreateTopics of an existing topic: created again (want TOPIC_ALREADY_EXISTS)`)
    }
    const r1 = await retentionOf()
    if (r1 !== '3600000') throw new Mismatch(`DescribeConfigs retention.ms: ${r1}, want 3600000`)

    await admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: t, configEntries: [{ name: 'retention.ms', value: '7200000' }] }],
    })
    const r2 = await retentionOf()
    if (r2 !== '7200000') throw new Mismatch(`after AlterConfigs retention.ms: ${r2}, want 7200000`)

    await admin.createPartitions({ topicPartitions: [{ topic: t, count: 5 }] })
    const n = await partitionsOf()
    if (n !== 5) throw new Mismatch(`after CreatePartitions 5: Metadata shows ${n} partitions`)

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
    await producer.connect()
    const messages = [...Array(100).keys()].map(i => ({ key: `k${i}`, value: `v${i}`, partition: 0 }))
    await producer.send({ topic: t, acks: -1, messages })
    await producer.send({ topic: t, acks: -1, messages: messages.slice(0, 10).map(m => ({ ...m, partition: 4 })) })
    await producer.disconnect()
    await admin.deleteTopicRecords({ topic: t, partitions: [{ partition: 0, offset: '50' }] })
    const offsets = await admin.fetchTopicOffsets(t)
    const p0 = offsets.find(o => o.partition === 0)
    const p4 = offsets.find(o => o.partition === 4)
    if (Number(p0.low) !== 50 || Number(p0.high) !== 100) {
      throw new Mismatch(`after DeleteRecords p0 < 50: low ${p0.low} high ${p0.high}, want 50 and 100`)
    }
    if (Number(p4.high) !== 10) throw new Mismatch(`new partition 4: high watermark ${p4.high}, want 10`)

    const cluster = await admin.describeCluster()
    if (cluster.brokers.length !== 1 || cluster.controller === null || !cluster.clusterId) {
      throw new Mismatch(`DescribeCluster: ${JSON.stringify(cluster)}`)
    }

    await admin.deleteTopics({ topics: [t] })
    const topics = await admin.listTopics()
    if (topics.includes(t)) throw new Mismatch(`after DeleteTopics, listTopics still has ${t}`)
  } finally {
    await admin.disconnect()
  }
}

async function main() {
  const args = parseArgs(process.argv)
  registerCodecs()
  const kafka = kafkaFor(args)
  const started = Date.now()
  let produced = 0
  let consumed = 0
  try {
    if (args.mode === 'group') {
      consumed = await groupMode(kafka, args)
      produced = 2 * args.records
    } else if (args.mode === 'admin') {
      await adminMode(kafka, args)
    } else {
      if (args.mode === 'all' || args.mode === 'produce') {
        await createTopic(kafka, args)
        await produce(kafka, args)
        produced = args.records
      }
      if (args.mode === 'all' || args.mode === 'consume') {
        consumed = await consume(kafka, args)
        await listOffsets(kafka, args)
      }
    }
  } catch (e) {
    const what = e instanceof Mismatch ? e.message : `client error ${e.name}: ${e.message}`
    fail(`${CLIENT} ${args.mode} topic=${args.topic} compression=${args.compression}: ${what}`)
  }
  const version = require('kafkajs/package.json').version
  console.log(`SUMMARY client=${CLIENT} version=${version} mode=${args.mode} topic=${args.topic} ` +
    `partitions=${args.partitions} compression=${args.compression} produced=${produced} consumed=${consumed} ` +
    `base_ts=${args.baseTs} seconds=${((Date.now() - started) / 1000).toFixed(1)} OK`)
  process.exit(0)
}

main()
