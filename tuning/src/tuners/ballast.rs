//! The ballast file: N GiB reserved with fallocate in the data directory. When the disk
//! fills, deleting it (`sluice-tune ballast remove`) frees room at once so the broker can
//! run retention and recover, instead of an operator hunting for files to delete.

use std::os::unix::fs::MetadataExt;

use crate::host::Host;
use crate::tuner::{Action, Row, Status};

use super::TuneConfig;

pub const WHY: &str = "deleting it frees space instantly when the disk fills";
/// File name inside the data directory (dot-prefixed: the engine skips dot files).
pub const FILE_NAME: &str = ".sluice-ballast";
/// Default ballast size.
pub const DEFAULT_BYTES: u64 = 1 << 30;

pub fn ballast(host: &Host, cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "ballast";
    let path = cfg.data_dir.join(FILE_NAME);
    let setting = path.display().to_string();
    if cfg.ballast_bytes == 0 {
        return vec![Row::unsupported(
            TUNER,
            setting,
            "disabled (--ballast-bytes 0)",
        )];
    }
    if !host.exists(&cfg.data_dir) {
        return vec![Row::unsupported(
            TUNER,
            setting,
            format!("data dir {} does not exist yet", cfg.data_dir.display()),
        )];
    }
    // Allocated blocks, not the apparent size: a sparse file reserves nothing.
    let allocated = host.metadata(&path).map(|m| m.blocks() * 512).ok();
    let current = match allocated {
        Some(bytes) => format!("{bytes} bytes allocated"),
        None => "absent".into(),
    };
    let ok = allocated.is_some_and(|b| b >= cfg.ballast_bytes);
    vec![Row {
        tuner: TUNER,
        setting,
        current,
        recommended: format!("{} bytes", cfg.ballast_bytes),
        // Creating a file in the data dir needs no root: the broker's user owns it.
        status: if ok { Status::Ok } else { Status::Differs },
        note: String::new(),
        actions: vec![Action::CreateBallast {
            path,
            bytes: cfg.ballast_bytes,
        }],
    }]
}
