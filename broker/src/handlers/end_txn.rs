//! EndTxn: a transactional producer commits or aborts its open transaction. The
//! coordinator (`crate::txn`) answers once Prepare{Commit,Abort} is in
//! `__transaction_state`; the markers follow in the background, as in Kafka. Transaction
//! version 1: the producer keeps its epoch (v5's producer id/epoch fields echo it).

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::{RequestContext, Versions};
use crate::runtime::Shard;
use crate::txn::frontend::call;

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, req: EndTxnRequest) -> EndTxnResponse {
    let transactional_id = req.transactional_id.0.to_string();
    let (producer_id, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let result = call(shard, &transactional_id.clone(), move |s, backend| {
        Box::pin(async move {
            backend
                .end_txn(&s, &transactional_id, producer_id, epoch, commit, true)
                .await
        })
    })
    .await;
    match result {
        Ok(()) => EndTxnResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => EndTxnResponse::default()
            .with_error_code(e.code_for(ctx.version >= 2))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
