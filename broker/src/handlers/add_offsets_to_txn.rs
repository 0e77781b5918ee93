//! AddOffsetsToTxn: a transactional producer adds a consumer group's offsets partition
//! (`__consumer_offsets`, the group's partition) to its open transaction before
//! TxnOffsetCommit. Run on the transaction's coordinator (`crate::txn`).

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{RequestContext, Versions};
use crate::group::frontend::ensure_offsets_topic;
use crate::group::records::{OFFSETS_TOPIC, partition_for_group};
use crate::runtime::Shard;
use crate::txn::frontend::call;

pub const VERSIONS: Versions = Versions { min: 0, max: 4 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let offsets = match ensure_offsets_topic(shard).await {
        Ok(topic) => topic,
        Err(e) => return AddOffsetsToTxnResponse::default().with_error_code(e.code()),
    };
    let partition = partition_for_group(&req.group_id.0, offsets.partitions);
    let transactional_id = req.transactional_id.0.to_string();
    let (producer_id, epoch) = (req.producer_id.0, req.producer_epoch);
    let result = call(shard, &transactional_id.clone(), move |s, backend| {
        Box::pin(async move {
            backend
                .add_partitions(
                    &s,
                    &transactional_id,
                    producer_id,
                    epoch,
                    vec![(OFFSETS_TOPIC.to_string(), partition)],
                    crate::txn::TxnVersion::V0,
                )
                .await
        })
    })
    .await;
    let code = result.err().map_or(0, |e| e.code_for(ctx.version >= 2));
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
