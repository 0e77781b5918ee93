//! Micro-benchmarks of hot paths: CRC32C, building v2 batches (loadgen's in-place builder vs
//! kafka-protocol's RecordBatchEncoder), batch validation (engine), Produce request
//! encode/decode (kafka-protocol), consumer-side batch parsing, and the leader's count of a
//! compressed batch's records (broker).
//!
//! `cargo bench -p bench` measures; `cargo test -p bench` runs each once so they cannot rot.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression as KpCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use loadgen::record_batch::{BatchBuilder, Compression, ProducerStamp, for_each_value};

const RECORDS_PER_BATCH: usize = 100;
const VALUE_BYTES: usize = 1024;

fn build_with_loadgen(builder: &mut BatchBuilder, value: &[u8]) -> Bytes {
    for i in 0..RECORDS_PER_BATCH {
        builder.append(
            1_700_000_000_000 + i as i64,
            None,
            &value[..12],
            &value[12..],
        );
    }
    builder
        .seal(Compression::None, ProducerStamp::NONE)
        .expect("seal")
}

fn batch_of(records: usize, value_bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::with_capacity(records * (value_bytes + 16) + 64);
    let value = vec![b'x'; value_bytes];
    for i in 0..records {
        builder.append(i as i64, None, &value[..12], &value[12..]);
    }
    builder
        .seal(Compression::None, ProducerStamp::NONE)
        .expect("seal")
}

fn crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for size in [16 * 1024usize, 1024 * 1024] {
        let data = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        // The engine's CRC (crc-fast) against the crc32c crate it replaced.
        group.bench_function(format!("engine/{size}B"), |b| {
            b.iter(|| engine::batch::crc32c(black_box(&data)))
        });
        group.bench_function(format!("crc32c_crate/{size}B"), |b| {
            b.iter(|| crc32c::crc32c(black_box(&data)))
        });
    }
    group.finish();
}

fn batch_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_build_100x1KiB");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    let value = vec![b'v'; VALUE_BYTES];
    let mut builder = BatchBuilder::with_capacity(RECORDS_PER_BATCH * (VALUE_BYTES + 16) + 64);
    group.bench_function("loadgen_in_place", |b| {
        b.iter(|| build_with_loadgen(&mut builder, black_box(&value)))
    });
    let value_bytes = Bytes::from(value.clone());
    group.bench_function("kafka_protocol_encoder", |b| {
        b.iter(|| {
            // What a client does with the encoder: one owned Record per record.
            let records: Vec<Record> = (0..RECORDS_PER_BATCH)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: -1,
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: None,
                    value: Some(value_bytes.clone()),
                    headers: IndexMap::new(),
                })
                .collect();
            let mut out = BytesMut::with_capacity(RECORDS_PER_BATCH * (VALUE_BYTES + 16) + 64);
            RecordBatchEncoder::encode(
                &mut out,
                records.iter(),
                &RecordEncodeOptions {
                    version: 2,
                    compression: KpCompression::None,
                },
            )
            .expect("encode");
            out
        })
    });
    group.finish();
}

fn batch_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validate");
    for (records, value_bytes) in [(100usize, 1024usize), (1000, 100)] {
        let batch = batch_of(records, value_bytes);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(format!("engine_{records}x{value_bytes}B"), |b| {
            b.iter(|| {
                engine::batch::validate_batch(black_box(&batch), 8 * 1024 * 1024, true).is_ok()
            })
        });
        group.bench_function(format!("loadgen_parse_{records}x{value_bytes}B"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for_each_value(black_box(&batch), |_| {}, |_, v| n += v.len()).expect("parse");
                n
            })
        });
    }
    group.finish();
}

/// The leader's cost of counting a compressed batch's records (issue 12: Kafka decompresses
/// every compressed producer batch; Sluice inflates it through a fixed buffer and walks the
/// length prefixes): the engine's framing + CRC check alone, then with the count.
fn compressed_count(c: &mut Criterion) {
    let mut group = c.benchmark_group("compressed_count_1000x100B");
    let value: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    for (codec, compression) in [
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let mut builder = BatchBuilder::with_capacity(1000 * 120 + 64);
        for i in 0..1000 {
            builder.append(i, None, &value[..12], &value[12..]);
        }
        let batch = builder
            .seal(compression, ProducerStamp::NONE)
            .expect("seal");
        let codec_id = engine::batch::BatchHeader::parse(&batch)
            .expect("header")
            .compression();
        let payload = batch.slice(engine::limits::BATCH_HEADER_BYTES..);
        assert_eq!(
            broker::partition::record_count::count_compressed_records(codec_id, &payload),
            Ok(1000)
        );
        // Per record of the batch: the figure to compare with the uncompressed walk.
        group.throughput(Throughput::Elements(1000));
        group.bench_function(format!("{codec}_validate"), |b| {
            b.iter(|| {
                engine::batch::validate_batch(black_box(&batch), 8 * 1024 * 1024, true).is_ok()
            })
        });
        group.bench_function(format!("{codec}_validate_and_count"), |b| {
            b.iter(|| {
                engine::batch::validate_batch(black_box(&batch), 8 * 1024 * 1024, true).is_ok()
                    && broker::partition::record_count::count_compressed_records(
                        codec_id,
                        black_box(&payload),
                    )
                    .is_ok()
            })
        });
    }
    group.finish();
}

fn produce_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_request_16x64KiB");
    let batch = batch_of(64, 1000);
    let topic = TopicName(StrBytes::from_static_str("bench"));
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic)
                .with_partition_data(
                    (0..16)
                        .map(|p| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(batch.clone()))
                        })
                        .collect(),
                ),
        ]);
    let version = 9;
    let size = request.compute_size(version).expect("size");
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("encode_v9", |b| {
        let mut buf = BytesMut::with_capacity(size);
        b.iter(|| {
            buf.clear();
            request.encode(&mut buf, version).expect("encode");
            buf.len()
        })
    });
    let mut encoded = BytesMut::with_capacity(size);
    request.encode(&mut encoded, version).expect("encode");
    let encoded = encoded.freeze();
    group.bench_function("decode_v9", |b| {
        b.iter(|| {
            let mut bytes = encoded.clone();
            ProduceRequest::decode(&mut bytes, version).expect("decode")
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    crc,
    batch_build,
    batch_validate,
    compressed_count,
    produce_request
);
criterion_main!(benches);
