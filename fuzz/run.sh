#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 600), one after the other.
#   fuzz/run.sh [SECONDS]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Corpora grow in fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/); a crash leaves
# its input in fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/, where the
# stable tests (engine/tests/log_model.rs, broker/tests/request_decode.rs) replay it.
# Builds go to $CARGO_TARGET_DIR (default fuzz/target).
set -euo pipefail
seconds="${1:-600}"
cd "$(dirname "$0")"
for target in log_ops request_decode; do
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "== $target: ${seconds}s"
    # -s none: the crates under test are safe Rust (the engine's only unsafe is fallocate,
    # the broker's its allocator), so panics and failed model checks are the findings and
    # the sanitizer's cost buys nothing; -a: overflow checks and debug assertions on.
    # --features broker for both: one build of the dependencies serves both targets.
    cargo +nightly fuzz run -s none -a --features broker "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1
done
