//! Producer ids (InitProducerId) without a round trip to the controller: node N hands out ids
//! from `(N + 1) << PRODUCER_ID_NODE_SHIFT` onwards, in blocks of `catalog::PRODUCER_ID_BLOCK`
//! persisted in its own `catalog.json` before any id in them is used.
//!
//! Owns: this node's range of producer ids. Lives on shard 0, inside the frontend.
//! Invariants: an id is never handed out twice, across restarts too (a block is persisted
//! before use; a crash skips the rest of a block); two nodes never share an id (2^40 ids per
//! node, node ids < 2^22).

use std::ops::Range;

use super::catalog::{Catalog, CatalogError};

/// Producer ids of node N start at (N + 1) << this.
pub const PRODUCER_ID_NODE_SHIFT: u32 = 40;

pub struct ProducerIds {
    node_id: i32,
    catalog: Catalog,
    block: Range<i64>,
}

impl ProducerIds {
    pub fn new(catalog: Catalog, node_id: i32) -> ProducerIds {
        ProducerIds {
            node_id,
            catalog,
            block: 0..0,
        }
    }

    /// A fresh producer id (epoch 0); persists a new block when the current one is used up.
    pub fn allocate(&mut self) -> Result<i64, CatalogError> {
        if self.block.is_empty() {
            self.block = self.catalog.take_producer_id_block()?;
        }
        let id = self.block.start;
        self.block.start += 1;
        Ok(((i64::from(self.node_id) + 1) << PRODUCER_ID_NODE_SHIFT) + id)
    }
}
