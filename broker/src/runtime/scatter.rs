//! Scatter/gather: the one way a request touching partitions of several shards reaches them.
//!
//! Owns: grouping a request's items by owning shard (each item remembers its slot, its
//! position in the request), sending each owner its items in one mesh task, and putting the
//! owners' answers back into request order.
//! Invariants:
//! - One mesh task per owning shard, sent in shard order through [`Shard::invoke_ordered`]:
//!   the owner's closure runs synchronously in its mesh loop, in arrival order, so work done
//!   there (taking an append ticket) keeps the order in which requests were read.
//! - Items are moved, never cloned: record bytes travel as the `Bytes` the caller put in.
//! - The owners run in parallel; every slot sent gets exactly one answer (a fallback when
//!   the owner is gone or answered short).

use std::rc::Rc;

use futures_util::future::join_all;

use super::{LocalBoxFuture, Queued, Shard};
use crate::metadata::ShardId;

/// A request's items grouped by owning shard, in request order within each shard.
pub struct Scatter<T> {
    /// Per shard: the items' slots and the items.
    groups: Vec<(Vec<usize>, Vec<T>)>,
}

/// The answers of a [`Scatter::send`], one per owning shard, to be gathered.
pub struct Gather<A> {
    pending: Vec<(Vec<usize>, Queued<A>)>,
}

impl<T: Send + 'static> Scatter<T> {
    /// An empty scatter over `shards` shards (allocates nothing per shard until used).
    pub fn new(shards: usize) -> Self {
        Scatter {
            groups: (0..shards).map(|_| (Vec::new(), Vec::new())).collect(),
        }
    }

    /// Adds `item`, answered at `slot`, for the shard `owner`.
    pub fn push(&mut self, owner: ShardId, slot: usize, item: T) {
        let (slots, items) = &mut self.groups[owner.0];
        slots.push(slot);
        items.push(item);
    }

    /// True when no item was pushed.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|(slots, _)| slots.is_empty())
    }

    /// Sends every owning shard its items, shard by shard, and returns once all are queued.
    /// On each owner `on_owner(owner, items)` runs synchronously in its mesh loop (inline on
    /// this shard); the future it returns yields that shard's answer. For this shard the
    /// future runs when the `Gather` is awaited.
    pub async fn send<A, F>(self, shard: &Rc<Shard>, on_owner: F) -> Gather<A>
    where
        A: Send + 'static,
        F: Fn(&Rc<Shard>, Vec<T>) -> LocalBoxFuture<A> + Clone + Send + 'static,
    {
        let mut pending = Vec::new();
        for (target, (slots, items)) in self.groups.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let on_owner = on_owner.clone();
            let answer = shard
                .invoke_ordered(ShardId(target), move |s: &Rc<Shard>| on_owner(s, items))
                .await;
            pending.push((slots, answer));
        }
        Gather { pending }
    }
}

impl<A> Gather<A> {
    /// Each owner's answer (`None`: the shard is gone), for callers that race them instead
    /// of gathering them (long poll).
    pub fn into_answers(self) -> impl Iterator<Item = Queued<A>> {
        self.pending.into_iter().map(|(_, answer)| answer)
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl<R> Gather<Vec<R>> {
    /// Waits for every owner (in parallel) and puts each item's answer at its slot in `out`.
    /// Items whose owner is gone (shutting down) or answered short get `missing()`.
    pub async fn into_slots(self, out: &mut [Option<R>], missing: impl Fn() -> R) {
        let answers = self
            .pending
            .into_iter()
            .map(|(slots, queued)| async move { (slots, queued.result().await) });
        for (slots, answer) in join_all(answers).await {
            let mut answer = answer.unwrap_or_default().into_iter();
            for slot in slots {
                out[slot] = Some(answer.next().unwrap_or_else(&missing));
            }
        }
    }
}

/// Scatters `scatter` with `on_owner` and gathers the answers into `out` (see
/// [`Scatter::send`] and [`Gather::into_slots`]).
pub async fn scatter_gather<T, R, F>(
    shard: &Rc<Shard>,
    scatter: Scatter<T>,
    out: &mut [Option<R>],
    on_owner: F,
    missing: impl Fn() -> R,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(&Rc<Shard>, Vec<T>) -> LocalBoxFuture<Vec<R>> + Clone + Send + 'static,
{
    scatter
        .send(shard, on_owner)
        .await
        .into_slots(out, missing)
        .await;
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::runtime::test_support::shards;

    fn run(f: impl std::future::Future<Output = ()>) {
        compio::runtime::Runtime::new().unwrap().block_on(f);
    }

    /// Each owner answers every item with (item, its own shard id); the answers come back at
    /// their slots, in request order, from every shard, including this one.
    #[test]
    fn answers_return_in_request_order_across_shards() {
        run(async {
            let (shard, _threads) = shards(3);
            let owners = [2, 0, 1, 1, 2, 0, 2, 1];
            let mut scatter = Scatter::new(3);
            let mut out: Vec<Option<(u32, usize)>> = vec![None; owners.len() + 1];
            // Slot 0 is answered locally (a pre-filled error in the handlers).
            out[0] = Some((999, 99));
            for (i, &owner) in owners.iter().enumerate() {
                scatter.push(ShardId(owner), i + 1, (i as u32 + 1) * 10);
            }
            assert!(!scatter.is_empty());
            scatter_gather(
                &shard,
                scatter,
                &mut out,
                |s: &Rc<Shard>, items: Vec<u32>| {
                    let id = s.id.0;
                    Box::pin(async move { items.into_iter().map(|x| (x, id)).collect() })
                },
                || (0, usize::MAX),
            )
            .await;
            let mut want = vec![Some((999, 99))];
            want.extend(
                owners
                    .iter()
                    .enumerate()
                    .map(|(i, &o)| Some(((i as u32 + 1) * 10, o))),
            );
            assert_eq!(out, want);
        });
    }

    /// An owner answering short leaves no slot empty: the missing ones get the fallback.
    #[test]
    fn short_answers_are_filled() {
        run(async {
            let (shard, _threads) = shards(2);
            let mut scatter = Scatter::new(2);
            for slot in 0..4 {
                scatter.push(ShardId(slot % 2), slot, slot);
            }
            let mut out = vec![None; 4];
            scatter_gather(
                &shard,
                scatter,
                &mut out,
                |_: &Rc<Shard>, items: Vec<usize>| {
                    Box::pin(async move { items.into_iter().take(1).map(|x| x as i64).collect() })
                },
                || -1,
            )
            .await;
            assert_eq!(out, vec![Some(0), Some(1), Some(-1), Some(-1)]);
        });
    }

    /// The owner's closure runs in the order the scatters were sent (append tickets).
    #[test]
    fn closures_run_in_send_order_on_the_owner() {
        run(async {
            let (shard, _threads) = shards(2);
            let mut gathers = Vec::new();
            for round in 0..20u32 {
                let mut scatter = Scatter::new(2);
                scatter.push(ShardId(1), 0, round);
                let gather = scatter
                    .send(&shard, |s: &Rc<Shard>, items: Vec<u32>| {
                        // Synchronously, in mesh order: count the arrivals on the owner.
                        let arrivals = s.services.get_or_init(|| std::cell::Cell::new(0u32));
                        let seen = arrivals.get();
                        arrivals.set(seen + 1);
                        Box::pin(async move { items.into_iter().map(|r| (r, seen)).collect() })
                    })
                    .await;
                gathers.push(gather);
            }
            for (round, gather) in gathers.into_iter().enumerate() {
                let mut out = vec![None];
                gather.into_slots(&mut out, || (0, 0)).await;
                assert_eq!(out[0], Some((round as u32, round as u32)));
            }
        });
    }
}
