//! DescribeTransactions: the state of transactional ids this node coordinates (the
//! `kafka-transactions describe` tool). An id coordinated elsewhere gets NOT_COORDINATOR;
//! an unknown one TRANSACTIONAL_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::{RequestContext, Versions, str_bytes};
use crate::runtime::Shard;
use crate::txn::frontend::call;

pub const VERSIONS: Versions = Versions { min: 0, max: 0 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let name = id.0.to_string();
        let described = call(shard, &name.clone(), move |s, backend| {
            Box::pin(async move { backend.describe(&s, &name) })
        })
        .await;
        let state = match described {
            Ok(v) => TransactionState::default()
                .with_transaction_state(str_bytes(v.state.name()))
                .with_transaction_timeout_ms(v.timeout_ms)
                .with_transaction_start_time_ms(v.start_ms)
                .with_producer_id(ProducerId(v.producer_id))
                .with_producer_epoch(v.producer_epoch)
                .with_topics(
                    v.partitions
                        .into_iter()
                        .map(|(topic, partitions)| {
                            TopicData::default()
                                .with_topic(TopicName(str_bytes(&topic)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                ),
            Err(e) => TransactionState::default()
                .with_error_code(e.code())
                .with_transaction_state(str_bytes(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        };
        states.push(state.with_transactional_id(id));
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
