//! A shard's budget of request bytes read but not yet answered: Kafka's
//! `queued.max.request.bytes` (`kafka.queued_max_request_bytes`, per node, split evenly
//! across shards so no counter is shared between them).
//!
//! A connection asks for a grant of its next large frame's size (64 KiB or more; smaller ones
//! are bounded per connection, see net/connection.rs) as soon as the size prefix is read,
//! before it allocates the frame's buffer or reads its body; while the grant is not given it
//! stops reading its socket (back-pressure; the connection stays open). The grant is held
//! until the request is answered (conservative: an acks=all produce holds it while it waits
//! for replication, though its bytes may already be appended), then returned, and the waiters
//! are served in the order they asked (FIFO: a large frame is not starved).
//!
//! Bound: a grant is given when it fits in what is left, or when nothing is granted at all
//! (so a frame larger than the shard's share, up to `kafka.frame_bytes_max` which config
//! validation keeps <= the node's budget, still proceeds, alone). A shard therefore holds at
//! most `max(share, frame_bytes_max)` of request bytes; the broker warns at start-up when the
//! frame limit exceeds the share. Without this, 16 clients each sending 90 MiB of a frame
//! made the broker hold 1.5 GB.
//! Invariant: `in_use` is the sum of the live grants.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A shard's share of the node's `kafka.queued_max_request_bytes`.
pub fn shard_share(config: &crate::config::Config, shards: usize) -> usize {
    let share = config.kafka.queued_max_request_bytes / shards.max(1) as u64;
    usize::try_from(share).unwrap_or(usize::MAX).max(1)
}

pub struct RequestBudget {
    capacity: usize,
    in_use: Cell<usize>,
    next_ticket: Cell<u64>,
    /// Waiting asks, oldest first: (ticket, bytes, waker).
    waiters: RefCell<VecDeque<(u64, usize, Option<Waker>)>>,
}

impl RequestBudget {
    pub fn new(capacity: usize) -> Rc<RequestBudget> {
        assert!(capacity > 0, "a request budget holds at least a byte");
        Rc::new(RequestBudget {
            capacity,
            in_use: Cell::new(0),
            next_ticket: Cell::new(0),
            waiters: RefCell::new(VecDeque::new()),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes granted and not yet returned.
    pub fn in_use(&self) -> usize {
        self.in_use.get()
    }

    /// Asks waiting for a grant.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// A grant of `bytes`, once the budget has room for it (see the module doc).
    pub fn acquire(self: &Rc<Self>, bytes: usize) -> Acquire {
        Acquire {
            budget: Rc::clone(self),
            bytes,
            ticket: None,
        }
    }

    fn fits(&self, bytes: usize) -> bool {
        let in_use = self.in_use.get();
        in_use == 0 || in_use + bytes <= self.capacity
    }

    fn grant(self: &Rc<Self>, bytes: usize) -> Grant {
        self.in_use.set(self.in_use.get() + bytes);
        Grant {
            budget: Rc::clone(self),
            bytes,
        }
    }

    /// Wakes the oldest waiter if its ask now fits.
    fn wake_head(&self) {
        let mut waiters = self.waiters.borrow_mut();
        if let Some((_, bytes, waker)) = waiters.front_mut()
            && self.fits(*bytes)
            && let Some(w) = waker.take()
        {
            w.wake();
        }
    }
}

/// Bytes of the budget held by one request until it is answered.
pub struct Grant {
    budget: Rc<RequestBudget>,
    bytes: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget
            .in_use
            .set(self.budget.in_use.get() - self.bytes);
        self.budget.wake_head();
    }
}

pub struct Acquire {
    budget: Rc<RequestBudget>,
    bytes: usize,
    /// Set once queued.
    ticket: Option<u64>,
}

impl Future for Acquire {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        let budget = Rc::clone(&self.budget);
        let bytes = self.bytes;
        match self.ticket {
            None => {
                if budget.waiters.borrow().is_empty() && budget.fits(bytes) {
                    return Poll::Ready(budget.grant(bytes));
                }
                let ticket = budget.next_ticket.get();
                budget.next_ticket.set(ticket + 1);
                budget
                    .waiters
                    .borrow_mut()
                    .push_back((ticket, bytes, Some(cx.waker().clone())));
                self.ticket = Some(ticket);
                Poll::Pending
            }
            Some(ticket) => {
                let mut waiters = budget.waiters.borrow_mut();
                let at_head = waiters.front().is_some_and(|(t, _, _)| *t == ticket);
                if at_head && budget.fits(bytes) {
                    waiters.pop_front();
                    drop(waiters);
                    self.ticket = None;
                    let grant = budget.grant(bytes);
                    // The next one may fit too.
                    budget.wake_head();
                    return Poll::Ready(grant);
                }
                if let Some(entry) = waiters.iter_mut().find(|(t, _, _)| *t == ticket) {
                    entry.2 = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else {
            return;
        };
        let mut waiters = self.budget.waiters.borrow_mut();
        let was_head = waiters.front().is_some_and(|(t, _, _)| *t == ticket);
        waiters.retain(|(t, _, _)| *t != ticket);
        drop(waiters);
        if was_head {
            self.budget.wake_head();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(a: &mut Acquire) -> Poll<Grant> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(a).poll(&mut cx)
    }

    #[test]
    fn grants_fit_in_the_capacity_and_come_back() {
        let b = RequestBudget::new(100);
        let first = b.acquire(60).now_or_never_grant();
        let mut second = b.acquire(60);
        assert!(poll(&mut second).is_pending(), "60 + 60 > 100");
        assert_eq!((b.in_use(), b.waiting()), (60, 1));
        drop(first);
        let Poll::Ready(g) = poll(&mut second) else {
            panic!("the returned bytes serve the waiter");
        };
        assert_eq!((b.in_use(), b.waiting()), (60, 0));
        drop(g);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn waiters_are_served_in_order_and_small_asks_do_not_overtake() {
        let b = RequestBudget::new(100);
        let held = b.acquire(90).now_or_never_grant();
        let mut big = b.acquire(80);
        assert!(poll(&mut big).is_pending());
        let mut small = b.acquire(5);
        assert!(poll(&mut small).is_pending(), "queued behind the big ask");
        drop(held);
        assert!(poll(&mut small).is_pending(), "not at the head yet");
        let Poll::Ready(big_grant) = poll(&mut big) else {
            panic!("head served")
        };
        let Poll::Ready(_small_grant) = poll(&mut small) else {
            panic!("80 + 5 fits")
        };
        drop(big_grant);
    }

    #[test]
    fn a_frame_larger_than_the_share_proceeds_alone() {
        let b = RequestBudget::new(100);
        let alone = b.acquire(150).now_or_never_grant();
        assert_eq!(b.in_use(), 150);
        let mut next = b.acquire(1);
        assert!(poll(&mut next).is_pending());
        drop(alone);
        assert!(poll(&mut next).is_ready());
    }

    #[test]
    fn a_dropped_waiter_gives_its_turn_away() {
        let b = RequestBudget::new(100);
        let held = b.acquire(100).now_or_never_grant();
        let mut first = b.acquire(50);
        let mut second = b.acquire(50);
        assert!(poll(&mut first).is_pending());
        assert!(poll(&mut second).is_pending());
        drop(first);
        drop(held);
        assert!(poll(&mut second).is_ready());
        assert_eq!(b.waiting(), 0);
    }

    impl Acquire {
        fn now_or_never_grant(mut self) -> Grant {
            match poll(&mut self) {
                Poll::Ready(g) => g,
                Poll::Pending => panic!("expected an immediate grant"),
            }
        }
    }
}
