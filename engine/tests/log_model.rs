//! The `log_ops` fuzz target's model check, run on stable over fixed inputs and every crash
//! input the fuzzer found (fuzz/regressions/log_ops/), so the harness cannot rot and fixed
//! bugs stay fixed. The harness lives in fuzz/src/log_model.rs, shared by path.

#[path = "../../fuzz/src/log_model.rs"]
#[allow(dead_code)]
mod log_model;

use std::path::Path;

/// Every file in `fuzz/<kind>/log_ops/`, by name.
fn inputs(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/{kind}/log_ops"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn seed_inputs_pass_the_model() {
    let seeds = inputs("seeds");
    assert!(!seeds.is_empty(), "fuzz/seeds/log_ops is empty");
    for (name, data) in seeds {
        eprintln!("seed {name}");
        log_model::run(&data);
    }
}

#[test]
fn found_crashes_stay_fixed() {
    for (name, data) in inputs("regressions") {
        eprintln!("regression {name}");
        log_model::run(&data);
    }
}

/// Inputs built by hand: every op, with and without crashes, on each config flag.
#[test]
fn every_op_on_every_config() {
    let mut total = log_model::Stats::default();
    for flags in [0u8, 1, 2, 4, 8, 16, 32, 0x3f] {
        for op_base in 0u8..16 {
            let mut data = vec![flags, 0x10, 0, 2, 100, 0, 0, 0];
            for i in 0..40u8 {
                // now_ms += .., op, then operand bytes.
                data.extend_from_slice(&[7, 0, op_base.wrapping_add(i * 5) % 16]);
                data.extend_from_slice(&[i.wrapping_mul(37), 3, 200, i, 1, 0, 9, 4, 2, 1, 0, 5]);
            }
            let s = log_model::run(&data);
            total.ops += s.ops;
            total.appended_batches += s.appended_batches;
            total.reopens += s.reopens;
            total.crashes += s.crashes;
            total.segments_max = total.segments_max.max(s.segments_max);
        }
    }
    eprintln!("{total:?}");
    // The inputs reach what they are for: appends, rolls, reopens and crashes.
    assert!(total.appended_batches > 1000, "{total:?}");
    assert!(total.segments_max > 3, "{total:?}");
    assert!(total.reopens > 100 && total.crashes > 5, "{total:?}");
}
