//! Arbitrary bytes through the broker's request path, as a connection reads them
//! (`sluice_fuzz::request_decode`).
#![no_main]

/// The broker's own allocator, as in `sluice start`: hostile array lengths map lazily
/// instead of aborting the process (broker/src/sys.rs).
#[global_allocator]
static ALLOC: broker::sys::BrokerAlloc = broker::sys::BrokerAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::request_decode::run(data);
});
