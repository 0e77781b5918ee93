#!/usr/bin/env node
// kafkajs transactions (issue 15): a transactional producer (transactionalId, idempotent,
// one request in flight) over two partitions of an output topic, with the offsets of an input
// topic's group committed through the transaction (sendOffsets):
//   1. send FIRST records per partition, sendOffsets(input at FIRST), commit;
//   2. send ABORTED records per partition, sendOffsets(input at FIRST + SECOND), abort;
//   3. send SECOND records per partition, sendOffsets(input at FIRST + SECOND), commit.
// Checks: the group's committed offsets after each step (the abort leaves them alone); a
// consumer with readUncommitted false reads exactly steps 1 and 3, one with readUncommitted
// true all three, each in order, at Kafka's offsets (one offset per transaction marker, none
// delivered as a record). Prints "SUMMARY ... OK" and exits 0, or "FAIL: ..." on stderr and
// exits 1 (2 for bad arguments, 3 when kafkajs is missing).
//
//   node txn_kafkajs.js --bootstrap 127.0.0.1:9092 [--prefix kafkajs-txn]
//       [--inject-fault none|duplicate|missing]
//
// --inject-fault corrupts what the readUncommitted=false consumer read before the checks, to
// show they catch a duplicate or a lost record.
'use strict'

const CLIENT = 'kafkajs'
const PARTITIONS = 2
const FIRST = 10
const ABORTED = 10
const SECOND = 10
/** Milliseconds without progress before a wait fails. */
const PROGRESS_TIMEOUT_MS = 60000

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
const { Kafka, logLevel } = kafkajs

class Mismatch extends Error {}

function parseArgs(argv) {
  const args = { prefix: 'kafkajs-txn', injectFault: 'none' }
  const names = { '--bootstrap': 'bootstrap', '--prefix': 'prefix', '--inject-fault': 'injectFault' }
  for (let i = 2; i < argv.length; i += 2) {
    const key = names[argv[i]]
    if (!key || i + 1 >= argv.length) fail(`usage: bad argument ${argv[i]}`, 2)
    args[key] = argv[i + 1]
  }
  if (!args.bootstrap) fail('usage: --bootstrap is required', 2)
  if (!['none', 'duplicate', 'missing'].includes(args.injectFault)) fail('bad --inject-fault', 2)
  args.input = `${args.prefix}-input`
  args.output = `${args.prefix}-output`
  args.group = `${args.prefix}-app`
  args.transactionalId = `${args.prefix}-producer`
  return args
}

function values(prefix, partition, count) {
  return Array.from({ length: count }, (_, i) => `${prefix}-${partition}-${i}`)
}

function checkEqual(what, got, want) {
  const g = JSON.stringify(got)
  const w = JSON.stringify(want)
  if (g !== w) throw new Mismatch(`${what}: got ${g}, want ${w}`)
}

/** Waits until the group's committed offsets are `want`: kafkajs asks OffsetFetch without
 * require_stable, and a commit's offsets become visible when its marker is written, after EndTxn
 * has answered. */
async function awaitGroupOffsets(admin, args, want, what) {
  const deadline = Date.now() + PROGRESS_TIMEOUT_MS
  for (;;) {
    const got = await groupOffsets(admin, args)
    if (JSON.stringify(got) === JSON.stringify(want)) return
    if (Date.now() > deadline) throw new Mismatch(`${what}: group offsets ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

async function groupOffsets(admin, args) {
  const [topic] = await admin.fetchOffsets({ groupId: args.group, topics: [args.input] })
  const byPartition = new Map(topic.partitions.map(p => [p.partition, Number(p.offset)]))
  return Array.from({ length: PARTITIONS }, (_, p) => byPartition.get(p) ?? -1)
}

/** One transaction: `count` records per output partition, the input's offsets, commit or abort. */
async function transaction(producer, args, prefix, count, inputOffset, commit) {
  const txn = await producer.transaction()
  const offsets = []
  for (let p = 0; p < PARTITIONS; p++) {
    const messages = values(prefix, p, count).map((value, i) => ({ key: `k${i}`, value, partition: p }))
    const [meta] = await txn.send({ topic: args.output, messages })
    if (meta.errorCode !== 0) throw new Mismatch(`send to p${p}: error ${meta.errorCode}`)
    offsets.push(Number(meta.baseOffset))
  }
  await txn.sendOffsets({
    consumerGroupId: args.group,
    topics: [{
      topic: args.input,
      partitions: Array.from({ length: PARTITIONS }, (_, p) => ({ partition: p, offset: String(inputOffset) })),
    }],
  })
  if (commit) await txn.commit()
  else await txn.abort()
  return offsets
}

/** Reads the output from the beginning with a fresh group until every partition has delivered
 * the record at `lastOffset[p]`; returns [{offset, value}] per partition. */
async function readOutput(kafka, args, readUncommitted, lastOffset) {
  const consumer = kafka.consumer({
    groupId: `${args.prefix}-reader-${readUncommitted ? 'uncommitted' : 'committed'}`,
    readUncommitted,
  })
  const got = Array.from({ length: PARTITIONS }, () => [])
  await consumer.connect()
  try {
    await consumer.subscribe({ topic: args.output, fromBeginning: true })
    await new Promise((resolve, reject) => {
      let last = Date.now()
      const timer = setInterval(() => {
        if (Date.now() - last > PROGRESS_TIMEOUT_MS) {
          clearInterval(timer)
          reject(new Mismatch(`reading ${args.output} (readUncommitted ${readUncommitted}): no progress; ` +
            `got ${got.map(g => g.length)} records`))
        }
      }, 200)
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          last = Date.now()
          got[partition].push({ offset: Number(message.offset), value: message.value && message.value.toString() })
          const done = got.every((records, p) => records.length > 0 && records[records.length - 1].offset >= lastOffset[p])
          if (done) {
            clearInterval(timer)
            resolve()
          }
        },
      }).catch(reject)
    })
  } finally {
    await consumer.disconnect()
  }
  return got
}

async function main() {
  const args = parseArgs(process.argv)
  const started = Date.now()
  const kafka = new Kafka({ clientId: 'sluice-txn-test', brokers: [args.bootstrap], logLevel: logLevel.ERROR })
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({
    waitForLeaders: true,
    topics: [args.input, args.output].map(topic => ({ topic, numPartitions: PARTITIONS, replicationFactor: 1 })),
  })
  const producer = kafka.producer({ transactionalId: args.transactionalId, idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()

  const first = await transaction(producer, args, 'first', FIRST, FIRST, true)
  await awaitGroupOffsets(admin, args, [FIRST, FIRST], 'after the first commit')
  const aborted = await transaction(producer, args, 'aborted', ABORTED, FIRST + SECOND, false)
  // The aborted offsets must never show (the next commit's are the same numbers, so look now).
  checkEqual('group offsets after the abort', await groupOffsets(admin, args), [FIRST, FIRST])
  const second = await transaction(producer, args, 'second', SECOND, FIRST + SECOND, true)
  await awaitGroupOffsets(admin, args, [FIRST + SECOND, FIRST + SECOND], 'after the second commit')
  await producer.disconnect()
  // A marker follows each transaction: first at 0.., marker, aborted, marker, second, marker.
  checkEqual('first transaction offsets', first, [0, 0])
  checkEqual('aborted transaction offsets', aborted, [FIRST + 1, FIRST + 1])
  checkEqual('second transaction offsets', second, [FIRST + ABORTED + 2, FIRST + ABORTED + 2])
  const lastOffset = second.map(base => base + SECOND - 1)

  const committed = await readOutput(kafka, args, false, lastOffset)
  if (args.injectFault === 'duplicate') committed[0].splice(1, 0, committed[0][0])
  if (args.injectFault === 'missing') committed[0].splice(3, 1)
  const uncommitted = await readOutput(kafka, args, true, lastOffset)
  const range = (from, n) => Array.from({ length: n }, (_, i) => from + i)
  for (let p = 0; p < PARTITIONS; p++) {
    checkEqual(`readUncommitted=false p${p} values`, committed[p].map(r => r.value),
      [...values('first', p, FIRST), ...values('second', p, SECOND)])
    checkEqual(`readUncommitted=false p${p} offsets`, committed[p].map(r => r.offset),
      [...range(0, FIRST), ...range(second[p], SECOND)])
    checkEqual(`readUncommitted=true p${p} values`, uncommitted[p].map(r => r.value),
      [...values('first', p, FIRST), ...values('aborted', p, ABORTED), ...values('second', p, SECOND)])
    checkEqual(`readUncommitted=true p${p} offsets`, uncommitted[p].map(r => r.offset),
      [...range(0, FIRST), ...range(aborted[p], ABORTED), ...range(second[p], SECOND)])
  }
  const [hw] = await admin.fetchTopicOffsets(args.output)
  checkEqual('output high watermark (records + 3 markers)', Number(hw.high), FIRST + ABORTED + SECOND + 3)
  await admin.disconnect()
  console.log(`SUMMARY client=${CLIENT} scenario=transactions committed=${PARTITIONS * (FIRST + SECOND)} ` +
    `aborted=${PARTITIONS * ABORTED} group_offsets=${FIRST + SECOND} elapsed_s=${((Date.now() - started) / 1000).toFixed(1)} OK`)
  process.exit(0)
}

main().catch(e => fail(e instanceof Mismatch ? e.message : (e && e.stack) || String(e)))
