//! Per-shard services: state a subsystem keeps once per shard, held by the `Shard` (not in
//! thread-locals), created on first use and dropped with the shard.
//!
//! Owns: the slots, one per service type. Today's services, each reached through its own
//! module's accessor:
//! - `group::backend::GroupBackend` (`group::backend::backend`): the shard's group
//!   coordinator, its appends, replays and timers;
//! - `replica::fetcher::Fetchers` (`replica::fetcher::send_to_leader`): one follower fetcher
//!   per leader this shard fetches from;
//! - `http::Seen` (`http` scrapes): partitions seen at the last scrape;
//! - `handlers::fetch_session::FetchSessionCache` (`handlers::fetch_session::sessions`):
//!   incremental fetch sessions.
//!
//! Does not own: what the services do. The runtime knows none of their types, so those
//! modules depend on the runtime and never the other way round.
//! Invariants: at most one value per type; a service's `init` runs outside the slots'
//! borrow, so it may reach other services.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::rc::Rc;

/// The services of one shard, by type.
#[derive(Default)]
pub struct Services {
    /// A handful of entries: a linear search beats hashing.
    slots: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
}

impl Services {
    /// The service of type `T`, if started.
    pub fn get<T: 'static>(&self) -> Option<Rc<T>> {
        let slots = self.slots.borrow();
        let (_, any) = slots.iter().find(|(id, _)| *id == TypeId::of::<T>())?;
        Some(
            Rc::clone(any)
                .downcast::<T>()
                .expect("slot holds its own type"),
        )
    }

    /// The service of type `T`, started with `init` if it is not yet.
    pub fn get_or_init<T: 'static>(&self, init: impl FnOnce() -> T) -> Rc<T> {
        if let Some(service) = self.get::<T>() {
            return service;
        }
        let service = Rc::new(init());
        // `init` may have started it meanwhile (through another service): keep the first.
        if let Some(service) = self.get::<T>() {
            return service;
        }
        let any: Rc<dyn Any> = Rc::clone(&service) as Rc<dyn Any>;
        self.slots.borrow_mut().push((TypeId::of::<T>(), any));
        service
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn one_value_per_type_started_once() {
        let services = Services::default();
        assert!(services.get::<Cell<u32>>().is_none());
        let a = services.get_or_init(|| Cell::new(1u32));
        a.set(2);
        let b = services.get_or_init::<Cell<u32>>(|| unreachable!("already started"));
        assert_eq!(b.get(), 2);
        let s = services.get_or_init(|| String::from("other type"));
        assert_eq!(*s, "other type");
        assert_eq!(services.get::<Cell<u32>>().unwrap().get(), 2);
    }
}
