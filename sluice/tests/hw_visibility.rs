//! Issue 14, "the high watermark must not lag acks=1": what a client may read right after a
//! produce is answered. In Kafka the leader moves the high watermark with the append
//! (Partition.appendRecordsToLeader, then maybeIncrementLeaderHW: the minimum log end over
//! the ISR), before an acks=1 answer leaves; with the leader alone in the ISR that is at once.
//! Clients rely on it (kafkajs deleteRecords tests, read-your-write code). Sluice used to
//! answer with its own fsynced offset as the high watermark, so ListOffsets(latest) right
//! after an ack returned the old end in most rounds.
//!
//! - `acks_1_is_visible_when_answered`: one node, RF=1, 30 rounds of an acks=1 produce then
//!   at once, on another connection, ListOffsets(latest) (must be the base offset plus the
//!   record count) and a Fetch from the base offset (must return the batch, with that high
//!   watermark); acks=all rounds interleaved keep their offsets and are visible too.
//!
//! That acks=all is still answered only once the batch is durable is checked where it can be
//! observed: the replication core's `acks_all_waits_for_the_isr_and_for_durability` and
//! `a_lone_leader_exposes_acks_1_before_answering_and_before_its_sync`, and the broker's
//! `leader_with_isr_of_itself_answers_acks_all_once_durable` (the engine's durable offset
//! covers the batch when its answer arrives).

mod common;

use bytes::Bytes;
use common::requests::{create_topic_ok, fetch, list_offset, produce_acks};
use common::{Broker, RawClient, record_batch};

const ROUNDS: i32 = 30;

#[test]
fn acks_1_is_visible_when_answered() {
    let broker = Broker::start();
    let mut producer = broker.connect();
    let mut reader = broker.connect();
    create_topic_ok(&mut producer, "visible", &[]);
    let mut end = 0;
    for round in 0..ROUNDS {
        let count = round % 4 + 1;
        // Every fifth round acks=all: both acks answer with the offsets in order.
        let acks = if round % 5 == 4 { -1 } else { 1 };
        let (error, base) = produce(&mut producer, "visible", record_batch(count, None), acks);
        assert_eq!((error, base), (0, end), "round {round}: acks={acks}");
        end = base + i64::from(count);
        assert_eq!(
            list_offset(&mut reader, "visible", -1),
            (0, end),
            "round {round}: ListOffsets(latest) right after the acks={acks} answer"
        );
        let (error, high_watermark, _, got) = fetch(&mut reader, "visible", base);
        assert_eq!(
            (error, high_watermark, got),
            (0, end, vec![(base, count)]),
            "round {round}: Fetch right after the acks={acks} answer"
        );
    }
    assert!(
        !broker.log().contains("panicked"),
        "{}",
        common::tail(&broker.log(), 8000)
    );
    broker.stop();
}

/// Produce (v9) of `records` to partition 0 with `acks`: (error, base offset).
fn produce(c: &mut RawClient, topic: &str, records: Bytes, acks: i16) -> (i16, i64) {
    let (error, base, _) = produce_acks(c, topic, records, acks);
    (error, base)
}
