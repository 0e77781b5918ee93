//! EndTxn: a transactional producer commits or aborts its open transaction. The
//! coordinator (`crate::txn`) writes Prepare{Commit,Abort} to `__transaction_state`, then
//! the markers, and answers. v5 is transaction version 2 (KIP-890 part 2) while the cluster
//! finalizes it: the epoch is bumped at every end and the answer carries the producer id and
//! epoch the producer continues with. Below v5 (or with `transaction.version` < 2) the
//! producer keeps its epoch and the answer's id/epoch are -1, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::{RequestContext, Versions};
use crate::runtime::Shard;
use crate::txn::TxnVersion;
use crate::txn::frontend::call;

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };
/// The first version of transaction version 2 (Kafka's `EndTxnRequest` v5).
const FIRST_VERSION_2: i16 = 5;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, req: EndTxnRequest) -> EndTxnResponse {
    let transactional_id = req.transactional_id.0.to_string();
    let (producer_id, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let finalized = TxnVersion(shard.config().transaction.version);
    let version = if ctx.version >= FIRST_VERSION_2 && finalized.bumps_epoch() {
        TxnVersion::V2
    } else {
        TxnVersion::V0
    };
    let result = call(shard, &transactional_id.clone(), move |s, backend| {
        Box::pin(async move {
            backend
                .end_txn(
                    &s,
                    &transactional_id,
                    producer_id,
                    epoch,
                    commit,
                    true,
                    version,
                )
                .await
        })
    })
    .await;
    match result {
        Ok((id, epoch)) if version.bumps_epoch() => EndTxnResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Ok(_) => EndTxnResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        Err(e) => EndTxnResponse::default()
            .with_error_code(e.code_for(ctx.version >= 2))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
