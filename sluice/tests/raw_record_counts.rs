//! Batches whose record count lies (issue 12, item 5): with a valid CRC they still get
//! INVALID_RECORD (87), as Kafka's LogValidator answers, and leave the log end where it was;
//! an honest batch after them is appended at the next offset.

mod common;

use bytes::Bytes;
use common::{Broker, RawClient, compressed_batch, crc32c, record_batch};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

const TOPIC: &str = "counts";
use kafka_wire::error::INVALID_RECORD;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// Produces `records` to partition 0 with acks=all, so that an answer means the high
/// watermark (what ListOffsets reports) covers the batch; returns (error code, base offset).
fn produce(c: &mut RawClient, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name())
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// The partition's latest offset (ListOffsets -1: the high watermark, here the log end).
fn log_end_offset(c: &mut RawClient) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets");
    p.offset
}

/// `batch` claiming `claimed` records (records_count and last_offset_delta agree with each
/// other), CRC recomputed: only counting the records shows the lie.
fn claiming(batch: Bytes, claimed: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[23..27].copy_from_slice(&(claimed - 1).to_be_bytes());
    b[57..61].copy_from_slice(&claimed.to_be_bytes());
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}

#[test]
fn lying_record_counts_are_refused_and_the_log_end_stays() {
    let broker = Broker::start();
    let mut c = broker.connect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name())
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(produce(&mut c, record_batch(2, None)), (0, 0));

    // Claims 2^31-1 records, holds one: would move the log end by 2^31.
    let (code, _) = produce(&mut c, claiming(record_batch(1, None), i32::MAX));
    assert_eq!(code, INVALID_RECORD);
    assert_eq!(log_end_offset(&mut c), 2);
    // Claims one record, holds three: would give two records the offset of the next batch.
    let (code, _) = produce(&mut c, claiming(record_batch(3, None), 1));
    assert_eq!(code, INVALID_RECORD);
    assert_eq!(log_end_offset(&mut c), 2);

    // An honest batch goes on at the next offset; the log says so after a restart too.
    assert_eq!(produce(&mut c, record_batch(3, None)), (0, 2));
    assert_eq!(log_end_offset(&mut c), 5);
    let mut broker = broker;
    broker.restart();
    let mut c = broker.connect();
    assert_eq!(log_end_offset(&mut c), 5);
    assert!(
        broker.log().contains("records_count"),
        "the refusal is logged:\n{}",
        broker.log()
    );
    broker.stop();
}

/// Compressed batches are counted too (Kafka decompresses them on the leader): a header
/// that agrees with itself but not with the records inside is refused for every codec.
#[test]
fn compressed_batches_whose_count_lies_are_refused() {
    let broker = Broker::start();
    let mut c = broker.connect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name())
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    let mut end = 0;
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let honest = compressed_batch(compression, 3);
        for claimed in [1, 2, 4, i32::MAX] {
            let (code, _) = produce(&mut c, claiming(honest.clone(), claimed));
            assert_eq!(code, INVALID_RECORD, "{compression:?} claiming {claimed}");
            assert_eq!(log_end_offset(&mut c), end, "{compression:?}");
        }
        assert_eq!(produce(&mut c, honest), (0, end), "{compression:?}");
        end += 3;
    }
    broker.stop();
}
