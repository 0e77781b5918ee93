//! The `request_decode` fuzz target's harness, run on stable over well-formed requests and
//! every crash input the fuzzer found (fuzz/regressions/request_decode/), so the harness
//! cannot rot and fixed bugs stay fixed. The harness lives in fuzz/src/request_decode.rs,
//! shared by path.

#[path = "../../fuzz/src/request_decode.rs"]
mod request_decode;

use std::path::Path;

/// The broker's allocator, as the fuzz target and `sluice start` use it.
#[global_allocator]
static ALLOC: broker::sys::BrokerAlloc = broker::sys::BrokerAlloc;

fn fuzz_dir(kind: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/{kind}/request_decode"))
}

/// Every file in `fuzz/<kind>/request_decode/`, by name.
fn inputs(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Well-formed requests reach what they are for: decoded bodies, and for Produce valid
/// records (compressed ones counted).
#[test]
fn seed_requests_decode() {
    for (name, data) in request_decode::seed_inputs() {
        let stats = request_decode::run(&data);
        eprintln!("{name}: {stats:?}");
        if name.starts_with("records_") {
            assert_eq!(stats.valid_records, 1, "{name}: {stats:?}");
        } else if name == "api_versions_v9" {
            assert_eq!((stats.frames, stats.parsed), (1, 0), "{name}: {stats:?}");
        } else {
            assert_eq!(stats.decoded, stats.frames, "{name}: {stats:?}");
            assert!(stats.frames >= 1, "{name}: {stats:?}");
        }
        if name.starts_with("produce") {
            assert_eq!(stats.valid_records, 1, "{name}: {stats:?}");
        }
        if name.ends_with("gzip") || name.ends_with("zstd") || name == "pipelined" {
            assert!(stats.compressed_batches >= 1, "{name}: {stats:?}");
        }
    }
}

/// The committed seeds are the ones `seed_inputs` builds (rewrite them with
/// `SLUICE_WRITE_FUZZ_SEEDS=1 cargo test -p broker --test request_decode`).
#[test]
fn committed_seeds_are_current() {
    let dir = fuzz_dir("seeds");
    for (name, data) in request_decode::seed_inputs() {
        let path = dir.join(&name);
        if std::env::var_os("SLUICE_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(&path, &data).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == data, "{} is stale", path.display());
    }
}

#[test]
fn found_crashes_stay_fixed() {
    for (name, data) in inputs("regressions") {
        eprintln!("regression {name}");
        request_decode::run(&data);
    }
}

/// Short random-ish inputs from the seeds, cut and flipped: none panics.
#[test]
fn mangled_seeds_do_not_panic() {
    for (_, seed) in request_decode::seed_inputs() {
        for i in 0..seed.len().min(200) {
            let mut data = seed.clone();
            data[i] ^= 0x5a;
            request_decode::run(&data);
            request_decode::run(&seed[..i]);
            data[0] |= 1; // with fixed CRCs
            request_decode::run(&data);
        }
    }
}
