//! Single-threaded async primitives for one compio runtime, shared by the engine and the
//! broker (the broker's shards use them for wake-ups and append order; the engine for its
//! write side and group commit). Knows nothing of either: no Kafka, no shards.
//!
//! - `Notify`: a broadcast "something changed" signal with a version, so a waiter created
//!   before a notification sees it even if first polled afterwards (no lost wake-up, no
//!   polling loop); a waiter dropped before it fired removes its waker.
//! - `FifoLock`: an async mutex without data that admits tasks strictly in the order they
//!   called `lock` (the ticket is taken at call time); a dropped waiter gives its turn away.
//!
//! Invariants: `!Send`, never shared across threads; no `RefCell` borrow is held across a
//! poll boundary; a dropped waiter can never strand the others.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes all current waiters on `notify_all`. A waiter created before a notification sees it
/// even if it is first polled afterwards (versioned). A waiter dropped before it fired (a long
/// poll that timed out) removes its waker, so idle partitions do not accumulate them.
#[derive(Default)]
pub struct Notify {
    version: Cell<u64>,
    next_id: Cell<u64>,
    wakers: RefCell<Vec<(u64, Waker)>>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// A future resolving on the next `notify_all` after this call.
    pub fn notified(self: &Rc<Self>) -> Notified {
        self.changed_since(self.version())
    }

    /// The current version; `changed_since(version)` resolves once it moved on.
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// A future resolving once `notify_all` ran after `seen` was read from `version`.
    pub fn changed_since(self: &Rc<Self>, seen: u64) -> Notified {
        Notified {
            notify: Rc::clone(self),
            version: seen,
            id: None,
        }
    }

    pub fn notify_all(&self) {
        self.version.set(self.version.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// Registered waiters (tests and metrics).
    pub fn waiters(&self) -> usize {
        self.wakers.borrow().len()
    }
}

pub struct Notified {
    notify: Rc<Notify>,
    version: u64,
    id: Option<u64>,
}

impl Future for Notified {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.version.get() != self.version {
            // `notify_all` took every waker registered before it: nothing to remove on drop.
            self.id = None;
            return Poll::Ready(());
        }
        let notify = Rc::clone(&self.notify);
        let mut wakers = notify.wakers.borrow_mut();
        match self.id {
            Some(id) => match wakers.iter_mut().find(|(i, _)| *i == id) {
                Some((_, w)) => {
                    if !w.will_wake(cx.waker()) {
                        w.clone_from(cx.waker());
                    }
                }
                None => wakers.push((id, cx.waker().clone())),
            },
            None => {
                let id = notify.next_id.get();
                notify.next_id.set(id.wrapping_add(1));
                wakers.push((id, cx.waker().clone()));
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.notify.wakers.borrow_mut().retain(|(i, _)| *i != id);
        }
    }
}

/// An async mutex that admits tasks strictly in the order they called `lock` (the ticket is
/// taken at call time, not at first poll), so per-partition appends keep the order in which
/// requests were read. A dropped waiter gives its turn away, so cancellation cannot wedge it.
#[derive(Default)]
pub struct FifoLock {
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    held: Cell<bool>,
    abandoned: RefCell<BTreeSet<u64>>,
    waiters: RefCell<BTreeMap<u64, Waker>>,
}

impl FifoLock {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    pub fn lock(self: &Rc<Self>) -> Acquire {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        Acquire {
            lock: Rc::clone(self),
            ticket,
            done: false,
        }
    }

    fn advance(&self) {
        let mut next = self.serving.get() + 1;
        {
            let mut abandoned = self.abandoned.borrow_mut();
            while abandoned.remove(&next) {
                next += 1;
            }
        }
        self.serving.set(next);
        if let Some(w) = self.waiters.borrow_mut().remove(&next) {
            w.wake();
        }
    }
}

pub struct Acquire {
    lock: Rc<FifoLock>,
    ticket: u64,
    done: bool,
}

pub struct FifoGuard {
    lock: Rc<FifoLock>,
}

impl Future for Acquire {
    type Output = FifoGuard;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FifoGuard> {
        let lock = Rc::clone(&self.lock);
        if lock.serving.get() == self.ticket && !lock.held.get() {
            lock.held.set(true);
            self.done = true;
            return Poll::Ready(FifoGuard { lock });
        }
        lock.waiters
            .borrow_mut()
            .insert(self.ticket, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.lock.waiters.borrow_mut().remove(&self.ticket);
        if self.lock.serving.get() == self.ticket {
            assert!(
                !self.lock.held.get(),
                "FifoLock: serving ticket held but not acquired"
            );
            self.lock.advance();
        } else {
            self.lock.abandoned.borrow_mut().insert(self.ticket);
        }
    }
}

impl Drop for FifoGuard {
    fn drop(&mut self) {
        self.lock.held.set(false);
        self.lock.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_lock_serves_in_call_order_and_skips_dropped() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let lock = FifoLock::new();
            let order = Rc::new(RefCell::new(Vec::new()));
            let first = lock.lock();
            let dropped = lock.lock();
            let mut handles = Vec::new();
            for i in 0..3 {
                let acquire = lock.lock();
                let order = Rc::clone(&order);
                handles.push(compio::runtime::spawn(async move {
                    let _g = acquire.await;
                    order.borrow_mut().push(i);
                }));
            }
            let g = first.await;
            drop(dropped);
            drop(g);
            for h in handles.into_iter().rev() {
                h.await.unwrap();
            }
            assert_eq!(*order.borrow(), vec![0, 1, 2]);
        });
    }

    #[test]
    fn dropped_waiters_leave_no_waker_behind() {
        let n = Rc::new(Notify::new());
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..100 {
            let mut w = Box::pin(n.notified());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert_eq!(n.waiters(), 1);
        }
        assert_eq!(n.waiters(), 0);
    }

    /// Lets every other ready task run once.
    async fn yield_now() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// The engine's use: the write side is held across awaits, nobody enters meanwhile, and
    /// a group-commit waiter that read the version before the sync wakes after it.
    #[test]
    fn lock_serialises_and_changed_since_wakes() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let lock = FifoLock::new();
            let event = Rc::new(Notify::new());
            let order = Rc::new(RefCell::new(Vec::new()));
            let g = lock.lock().await;
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (lock, order) = (lock.clone(), order.clone());
                tasks.push(compio::runtime::spawn(async move {
                    let _g = lock.lock().await;
                    order.borrow_mut().push(i);
                }));
            }
            let seen = event.version();
            let e2 = event.clone();
            let waiter = compio::runtime::spawn(async move { e2.changed_since(seen).await });
            for _ in 0..10 {
                yield_now().await;
            }
            assert!(
                order.borrow().is_empty(),
                "nobody may enter while the guard is held"
            );
            drop(g);
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(order.borrow().len(), 3);
            event.notify_all();
            waiter.await.unwrap();
        });
    }

    #[test]
    fn notify_wakes_waiter_created_before() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let n = Rc::new(Notify::new());
            let w = n.notified();
            n.notify_all();
            w.await;
        });
    }
}
