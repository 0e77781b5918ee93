//! What the broker calls at start-up: one line per tuner setting that differs from the
//! recommendation, for the log. Never fails and never blocks start-up: errors and even panics
//! inside a tuner become a line of their own.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::host::{Host, RealSystem};
use crate::tuner::Status;
use crate::tuners::{self, TuneConfig};

/// Checks the host seen from `root` (normally `/`) for a broker whose data lives in `data_dir`;
/// returns one human line per setting that differs or needs root. Unsupported knobs are not
/// reported (a VM without cpufreq is not a problem to log at every start).
pub fn startup_report(root: &Path, data_dir: &Path) -> Vec<String> {
    let host = Host::new(root, Box::new(RealSystem));
    startup_report_on(&host, data_dir)
}

/// [`startup_report`] against any host (tests use a fake one).
pub fn startup_report_on(host: &Host, data_dir: &Path) -> Vec<String> {
    let data_dir = crate::host::absolute_path(data_dir);
    let cfg = TuneConfig {
        data_dir,
        ..TuneConfig::default()
    };
    let mut lines = Vec::new();
    for tuner in tuners::TUNERS {
        match catch_unwind(AssertUnwindSafe(|| (tuner.assess)(host, &cfg))) {
            Ok(rows) => {
                for r in rows
                    .iter()
                    .filter(|r| r.status != Status::Ok && r.status != Status::Unsupported)
                {
                    lines.push(format!(
                        "tuning: {} {} is {}, recommended {} ({}); fix: sluice tune apply --only {}",
                        r.tuner, r.setting, r.current, r.recommended, tuner.why, r.tuner
                    ));
                }
            }
            Err(_) => lines.push(format!(
                "tuning: checking {} failed (internal error); skipped",
                tuner.name
            )),
        }
    }
    lines
}
