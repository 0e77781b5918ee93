//! WriteTxnMarkers (API 27): the transaction coordinator asks a partition leader to end a
//! producer's transaction on its partitions by appending a COMMIT or ABORT control batch.
//!
//! SKELETON (issue 15): the partition side fills this in. `write_markers` is the seam the
//! transaction coordinator (`crate::txn`) calls for partitions led by this node; for other
//! nodes it sends the same request over the wire to their leader, whose handler runs the same
//! function.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::Versions;
use crate::runtime::Shard;

/// Kafka 4 serves v1 only (v0 was removed with the pre-2.0 protocols).
pub const VERSIONS: Versions = Versions { min: 1, max: 1 };

/// Writes every marker of `req` to the partitions this node leads (each on its owner shard)
/// and answers per partition, as Kafka's `handleWriteTxnMarkersRequest` does.
pub async fn write_markers(
    _shard: &Rc<Shard>,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let markers = req
        .markers
        .into_iter()
        .map(|m| {
            let topics = m
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|&p| {
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(ResponseError::UnsupportedVersion.code())
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}
