//! InitProducerId for idempotent producers: a fresh producer id at epoch 0 from the control
//! plane's persisted id blocks. Transactional ids are not supported yet: they get
//! UNSUPPORTED_VERSION, as FindCoordinator answers their coordinator lookup (see there and
//! docs/status.md: an authorization error would tell the user a wrong story).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::find_coordinator::TRANSACTIONS_UNSUPPORTED;
use super::{RequestContext, Versions};
use crate::controller::frontend::on_control;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req.transactional_id.is_some() {
        tracing::info!(target: "broker::producer", peer = %ctx.peer, "transactional producer refused: {TRANSACTIONS_UNSUPPORTED}");
        return fail(ResponseError::UnsupportedVersion);
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
            fail(ResponseError::UnknownServerError)
        }
        None => fail(ResponseError::BrokerNotAvailable),
    }
}
