//! Single-threaded async primitives for one compio runtime: a lock and a broadcast event.
//!
//! Owns: serialising appends across `.await`s, and waking group-commit waiters.
//! Invariants: no `RefCell` borrow is held across a poll boundary; a dropped waiter can never
//! strand the others (release wakes every waiter and each re-checks).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A `!Send` async mutex without data: whoever holds the guard owns the log's write side.
#[derive(Default)]
pub(crate) struct AsyncLock {
    locked: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

pub(crate) struct LockGuard<'a> {
    lock: &'a AsyncLock,
}

impl AsyncLock {
    pub(crate) fn lock(&self) -> Lock<'_> {
        Lock { lock: self }
    }
}

pub(crate) struct Lock<'a> {
    lock: &'a AsyncLock,
}

impl<'a> Future for Lock<'a> {
    type Output = LockGuard<'a>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LockGuard<'a>> {
        let lock = self.lock;
        if !lock.locked.get() {
            lock.locked.set(true);
            return Poll::Ready(LockGuard { lock });
        }
        let mut waiters = lock.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.locked.set(false);
        // Wake all: a woken waiter may have been dropped; the rest re-check and re-queue.
        let waiters = std::mem::take(&mut *self.lock.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// A broadcast "something changed" signal with a generation counter.
#[derive(Default)]
pub(crate) struct Event {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Event {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }
    /// Resolves once `notify_all` ran after `seen` was read.
    pub(crate) fn changed_since(&self, seen: u64) -> Changed<'_> {
        Changed { event: self, seen }
    }
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

pub(crate) struct Changed<'a> {
    event: &'a Event,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.event.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

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

    #[test]
    fn lock_serialises_and_event_wakes() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let lock = Rc::new(AsyncLock::default());
            let event = Rc::new(Event::default());
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
            let seen = event.generation();
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
}
