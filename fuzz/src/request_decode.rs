//! `request_decode`: arbitrary bytes through the broker's own request path, as a connection
//! reads them: `split_frame` (net/frame.rs), `parse_request` (the header half of
//! `handlers::dispatch`), each handler's body decode (`handlers::decode`), the ApiVersions
//! answers (unsupported versions included), and for Produce the leader's batch checks on
//! every partition's records (`producer_batch`,
//! `engine::batch::ValidatedBatch::new` with and without the LogAppendTime stamp,
//! `check_compressed_count` with the four codecs).
//!
//! Owns: the input layout and the checks. A panic anywhere is a finding: bad client input
//! gets an error or a closed connection, never a panic.
//! Shared by the fuzz target `fuzz/fuzz_targets/request_decode.rs` and the stable test
//! `broker/tests/request_decode.rs` (which includes this file by path).
//!
//! Input layout: byte 0 holds flags; the rest is the byte stream a client sent.
//! - bit 0: recompute the CRC32C of every record batch before the batch checks, so the
//!   fuzzer gets past the checksum to the record counting and decompression behind it;
//! - bit 1: the rest is a Produce partition's records themselves (no framing), the shortest
//!   way into the batch checks;
//! - bits 2-3: the frame size limit (`kafka.frame_bytes_max`) and max.message.bytes.

use std::net::SocketAddr;

use broker::handlers::{self, ParsedRequest, Reply, RequestContext, RequestRefusal};
use broker::net::frame::{HEADER_PREFIX_BYTES, split_frame};
use broker::partition::{self, AppendFailure};
use bytes::{Bytes, BytesMut};
use engine::batch::{ValidateOptions, ValidatedBatch, batch_crc, validate_batch};
use engine::limits::{BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES};
use kafka_protocol::messages::*;

/// What one input reached, for tests that check the seeds reach the interesting paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames: usize,
    pub parsed: usize,
    pub decoded: usize,
    /// Produce partitions whose records passed every batch check.
    pub valid_records: usize,
    pub compressed_batches: usize,
}

/// (kafka.frame_bytes_max, max.message.bytes) chosen by flag bits 2-3.
const LIMITS: [(u32, u32); 4] = [
    (100 * 1024 * 1024, engine::limits::MAX_BATCH_BYTES_DEFAULT),
    (1024, 200),
    (64 * 1024, 16 * 1024),
    (16, engine::limits::MAX_BATCH_BYTES_LIMIT),
];

pub fn run(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let Some((&flags, rest)) = data.split_first() else {
        return stats;
    };
    let fix_crc = flags & 1 == 1;
    let (frame_bytes_max, max_batch_bytes) = LIMITS[usize::from(flags >> 2) & 3];
    if flags & 2 == 2 {
        leader_checks(
            Bytes::copy_from_slice(rest),
            fix_crc,
            max_batch_bytes,
            &mut stats,
        );
        return stats;
    }
    let mut buf = BytesMut::from(rest);
    let mut need = 0;
    loop {
        let before = buf.len();
        match split_frame(&mut buf, frame_bytes_max, &mut need) {
            Ok(Some(frame)) => {
                assert!(
                    frame.len() >= HEADER_PREFIX_BYTES && frame.len() <= frame_bytes_max as usize
                );
                assert_eq!(
                    buf.len() + frame.len() + 4,
                    before,
                    "split_frame lost bytes"
                );
                stats.frames += 1;
                if !request(frame, fix_crc, max_batch_bytes, &mut stats) {
                    return stats; // the connection closes
                }
            }
            Ok(None) => {
                assert!(
                    need > buf.len(),
                    "split_frame wants {need} with {} held",
                    buf.len()
                );
                return stats;
            }
            Err(_) => return stats,
        }
    }
}

/// One frame, as `handlers::dispatch` takes it; false when the connection would close.
fn request(frame: Bytes, fix_crc: bool, max_batch_bytes: u32, stats: &mut Stats) -> bool {
    let request = match handlers::parse_request(frame) {
        Ok(r) => r,
        Err(RequestRefusal::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            correlation_id,
            ..
        }) => {
            let reply = handlers::api_versions::unsupported_version(correlation_id);
            assert!(
                matches!(reply, Reply::Frame(_)),
                "ApiVersions' refusal encodes"
            );
            return true;
        }
        Err(_) => return false,
    };
    stats.parsed += 1;
    let ParsedRequest {
        api_key,
        version,
        header,
        body,
    } = request;
    let ctx = RequestContext {
        api_key,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        peer: SocketAddr::from(([127, 0, 0, 1], 9092)),
    };
    let decoded = decode_body(&ctx, body, fix_crc, max_batch_bytes, stats);
    stats.decoded += usize::from(decoded);
    decoded
}

/// Decodes the body as its handler does (`handlers::decode`); false on a decode error.
fn decode_body(
    ctx: &RequestContext,
    body: Bytes,
    fix_crc: bool,
    max_batch_bytes: u32,
    stats: &mut Stats,
) -> bool {
    let version = ctx.version;
    macro_rules! decode_as {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match ctx.api_key {
                ApiKey::Produce => match handlers::decode::<ProduceRequest>(body, version) {
                    Ok(req) => {
                        for topic in req.topic_data {
                            for p in topic.partition_data {
                                if let Some(records) = p.records {
                                    leader_checks(records, fix_crc, max_batch_bytes, stats);
                                }
                            }
                        }
                        true
                    }
                    Err(e) => not_a_panic(e),
                },
                ApiKey::ApiVersions => match handlers::decode::<ApiVersionsRequest>(body, version) {
                    Ok(_) => {
                        let reply = ctx.reply(&handlers::api_versions::response(0));
                        assert!(matches!(reply, Reply::Frame(_)), "ApiVersions v{version} encodes");
                        true
                    }
                    Err(e) => not_a_panic(e),
                },
                $(ApiKey::$key => handlers::decode::<$ty>(body, version).map_or_else(not_a_panic, |_| true),)*
                other => panic!("parse_request let {other:?} through without a decoder here"),
            }
        };
    }
    decode_as! {
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest,
        InitProducerId => InitProducerIdRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        SyncGroup => SyncGroupRequest,
        DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest,
        DescribeLogDirs => DescribeLogDirsRequest,
        CreatePartitions => CreatePartitionsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        DescribeCluster => DescribeClusterRequest,
    }
}

/// `handlers::decode` turns a decoder panic into an error; the broker survives it, but it is
/// still a bug (upstream) worth a finding.
fn not_a_panic(error: String) -> bool {
    assert_ne!(
        error, "decoder panicked",
        "kafka-protocol panicked on a request body"
    );
    false
}

/// The leader's checks on one partition's records, as `Partition::validate_batches` runs
/// them (broker/src/partition/mod.rs): producer fields, then the one validation pass of every
/// batch (`engine::batch::ValidatedBatch::new`, CreateTime and LogAppendTime) and the count of
/// every compressed one.
fn leader_checks(records: Bytes, fix_crc: bool, max_batch_bytes: u32, stats: &mut Stats) {
    let records = if fix_crc {
        with_fixed_crcs(&records)
    } else {
        records
    };
    let _ = partition::producer_batch(&records);
    let created = validate_all(&records, max_batch_bytes, None, stats);
    let appended = validate_all(&records, max_batch_bytes, Some(1_700_000_000_000), stats);
    // Stamping never changes whether the records pass, nor where the batches are.
    match (&created, &appended) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "stamping moved batch boundaries"),
        (Err(_), Err(_)) => {}
        _ => panic!("LogAppendTime stamping changed validity: {created:?} vs {appended:?}"),
    }
    if created.is_ok() {
        stats.valid_records += 1;
    }
}

/// The batch loop of `Partition::validate_batches`: each batch validated in one pass (strict
/// producer counts, the stamp under LogAppendTime), each compressed one decompressed and
/// counted. A stamped batch as stored must pass validation again (its combined CRC is right).
/// Returns (position, length, records).
fn validate_all(
    records: &Bytes,
    max_batch_bytes: u32,
    log_append_time_ms: Option<i64>,
    stats: &mut Stats,
) -> Result<Vec<(usize, usize, u32)>, String> {
    let options = ValidateOptions {
        max_batch_bytes,
        strict_count: true,
        log_append_time_ms,
    };
    let mut spans = Vec::new();
    let mut pos = 0usize;
    if records.is_empty() {
        return Err("empty".into());
    }
    while pos < records.len() {
        let batch = ValidatedBatch::new(records, pos, options).map_err(|e| e.to_string())?;
        let len = batch.len();
        let h = batch.header();
        assert!(
            len >= BATCH_HEADER_BYTES && pos + len <= records.len(),
            "batch span"
        );
        assert!(h.records_count() >= 1 && h.last_offset_delta() == h.records_count() - 1);
        if let Some(now_ms) = log_append_time_ms {
            let stored = batch.to_stored(h.base_offset(), 0);
            let (again, _) = validate_batch(&stored, max_batch_bytes, true)
                .expect("a stamped batch validates as stored");
            assert_eq!(again.max_timestamp(), now_ms, "stamp's max_timestamp");
        }
        if h.compression() != 0 {
            stats.compressed_batches += 1;
            partition::check_compressed_count(h, &records[pos..pos + len], spans.len(), pos)
                .map_err(|e: AppendFailure| format!("{e:?}"))?;
        }
        spans.push((pos, len, h.records_count() as u32));
        pos += len;
    }
    Ok(spans)
}

/// The records with every framed batch's CRC32C recomputed (a fuzzing aid).
fn with_fixed_crcs(records: &[u8]) -> Bytes {
    let mut out = records.to_vec();
    let mut pos = 0usize;
    while let Some(prefix) = out.get(pos..pos + BATCH_LENGTH_PREFIX_BYTES) {
        let length = i32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(length).unwrap_or(0) + BATCH_LENGTH_PREFIX_BYTES;
        if total < BATCH_HEADER_BYTES || pos + total > out.len() {
            break;
        }
        let crc = batch_crc(&out[pos..pos + total]);
        out[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos += total;
    }
    Bytes::from(out)
}

/// Well-formed inputs: the fixed inputs of the stable test and the fuzzer's seeds.
pub fn seed_inputs() -> Vec<(String, Vec<u8>)> {
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("fuzz")));
        let mut out = BytesMut::new();
        header
            .encode(&mut out, key.request_header_version(version))
            .expect("header");
        body.encode(&mut out, version).expect("body");
        let mut framed = (out.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        framed
    }
    fn batch(compression: Compression, producer_id: i64) -> Bytes {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: if producer_id < 0 { -1 } else { 0 },
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: if producer_id < 0 { -1 } else { i as i32 },
                timestamp: 1_700_000_000_000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value {i} ").repeat(5))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        buf.freeze()
    }
    fn produce(version: i16, records: Bytes) -> Vec<u8> {
        let partition = produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(records));
        let topic = produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![partition]);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![topic]);
        frame(ApiKey::Produce, version, &req)
    }

    let mut seeds = Vec::new();
    let api_versions = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("fuzz"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    for v in [0, 3, 4, 9] {
        seeds.push((format!("api_versions_v{v}"), {
            let mut f = vec![0u8];
            if v == 0 {
                f.extend(frame(
                    ApiKey::ApiVersions,
                    0,
                    &ApiVersionsRequest::default(),
                ));
            } else {
                f.extend(frame(ApiKey::ApiVersions, v.min(4), &api_versions));
            }
            if v == 9 {
                // flags, size (4), api key (2), version (2): a version we do not serve is
                // answered, not closed.
                f[8] = 9;
            }
            f
        }));
    }
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t")))),
    ]));
    seeds.push((
        "metadata_v12".into(),
        [&[0u8][..], &frame(ApiKey::Metadata, 12, &metadata)].concat(),
    ));
    let fetch = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition(0),
                ]),
        ]);
    seeds.push((
        "fetch_v12".into(),
        [&[0u8][..], &frame(ApiKey::Fetch, 12, &fetch)].concat(),
    ));
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_num_partitions(3)
            .with_replication_factor(1),
    ]);
    seeds.push((
        "create_topics_v5".into(),
        [&[0u8][..], &frame(ApiKey::CreateTopics, 5, &create)].concat(),
    ));
    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let records = batch(compression, -1);
        seeds.push((
            format!("produce_v9_{name}"),
            [&[0u8][..], &produce(9, records.clone())].concat(),
        ));
        seeds.push((
            format!("records_{name}"),
            [&[2u8][..], &records[..]].concat(),
        ));
    }
    seeds.push((
        "produce_v3_idempotent".into(),
        [&[0u8][..], &produce(3, batch(Compression::None, 5))].concat(),
    ));
    // Two requests pipelined on one connection.
    let two = [
        &produce(11, batch(Compression::Lz4, -1))[..],
        &frame(ApiKey::Metadata, 1, &metadata),
    ]
    .concat();
    seeds.push(("pipelined".into(), [&[0u8][..], &two[..]].concat()));
    seeds
}
