//! Shard-local wake-ups: `Notify` wakes every waiter when something changed (a partition's
//! high watermark moved). `!Send`, never crosses shards; waiters compare a version, so a
//! wake-up between check and wait is never lost and no polling loop is needed.

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
        Notified {
            notify: Rc::clone(self),
            version: self.version.get(),
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
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let n = Rc::new(Notify::new());
            for _ in 0..100 {
                let w = n.notified();
                let timer = Box::pin(compio::time::sleep(std::time::Duration::from_millis(0)));
                let _ = futures_util::future::select(w, timer).await;
            }
            assert_eq!(n.waiters(), 0);
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
