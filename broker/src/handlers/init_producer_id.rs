//! InitProducerId. Without a transactional id: a fresh producer id at epoch 0 from the
//! control plane's persisted id blocks (idempotent producers). With one: the transaction
//! coordinator (`crate::txn`) returns the id's producer id with its epoch bumped, fencing
//! older producers of the same id (and aborting their open transaction first, answering
//! CONCURRENT_TRANSACTIONS so the client retries); v3+ carries the producer id and epoch a
//! recovering producer had (KIP-360). PRODUCER_FENCED reads INVALID_PRODUCER_EPOCH below v4.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{RequestContext, Versions};
use crate::controller::frontend::on_control;
use crate::runtime::Shard;
use crate::txn::frontend::call;

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(transactional_id) = req.transactional_id {
        let transactional_id = transactional_id.0.to_string();
        if transactional_id.is_empty() {
            return fail(ResponseError::InvalidRequest.code());
        }
        let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        let timeout_ms = req.transaction_timeout_ms;
        let result = call(shard, &transactional_id.clone(), move |s, backend| {
            Box::pin(async move {
                backend
                    .init_producer_id(&s, transactional_id, timeout_ms, expected)
                    .await
            })
        })
        .await;
        return match result {
            Ok((producer_id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err(e) => fail(e.code_for(ctx.version >= 4)),
        };
    }
    let id = on_control(shard, |s| {
        Box::pin(async move { s.control().allocate_producer_id().map_err(|e| e.message) })
    })
    .await;
    match id {
        Some(Ok(id)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Some(Err(e)) => {
            tracing::error!(target: "broker::producer", error = %e, "producer id allocation failed");
            fail(ResponseError::UnknownServerError.code())
        }
        None => fail(ResponseError::BrokerNotAvailable.code()),
    }
}
