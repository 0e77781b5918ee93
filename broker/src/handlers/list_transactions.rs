//! ListTransactions: the transactional ids this node coordinates, filtered by state names,
//! producer ids, (v1, KIP-994) a minimum running time and (v2, KIP-1152) a transactional id
//! pattern: a regular expression the whole id must match (RE2 syntax, as Kafka's RE2J); an
//! invalid one answers INVALID_REGULAR_EXPRESSION.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{RequestContext, Versions, str_bytes};
use crate::partition::now_ms;
use crate::runtime::Shard;
use crate::txn::TxnState;
use crate::txn::frontend::list_all;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

/// Longest transactional id pattern compiled (a bound on the regex's size).
const PATTERN_BYTES_MAX: usize = 4_096;

const STATE_NAMES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let pattern = match req
        .transactional_id_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(p) if p.len() <= PATTERN_BYTES_MAX => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(re) => Some(re),
            Err(_) => {
                return ListTransactionsResponse::default().with_error_code(
                    kafka_protocol::ResponseError::InvalidRegularExpression.code(),
                );
            }
        },
        Some(_) => {
            return ListTransactionsResponse::default()
                .with_error_code(kafka_protocol::ResponseError::InvalidRegularExpression.code());
        }
    };
    let listed = match list_all(shard).await {
        Ok(l) => l,
        Err(e) => return ListTransactionsResponse::default().with_error_code(e.code()),
    };
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|f| !STATE_NAMES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let states = listed
        .into_iter()
        .filter(|t| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == t.state.name())
        })
        .filter(|t| {
            pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&t.transactional_id))
        })
        .filter(|t| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == t.producer_id)
        })
        .filter(|t| {
            // Kafka's rule (`listTransactionStates`): running strictly longer than the
            // filter, timed from the transaction's start (-1 when none).
            req.duration_filter < 0 || now - t.start_ms > req.duration_filter
        })
        .map(|t| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(&t.transactional_id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(str_bytes(t.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
