//! Process limits and kernel facilities the storage engine depends on: file descriptors
//! (fs.file-max, fs.nr_open, RLIMIT_NOFILE), locked memory (RLIMIT_MEMLOCK), io_uring
//! availability (kernel.io_uring_disabled and a real io_uring_setup), fs.aio-max-nr.
//!
//! Rlimits belong to processes, so `apply` cannot change the running broker's: it writes a
//! limits.d file (new PAM sessions) and the note says what a systemd unit needs. A row is ok
//! when this process already has the limit or the limits.d file is in place.

use std::io;
use std::path::Path;

use crate::host::Host;
use crate::sys::{RLIM_UNLIMITED, Rlimit};
use crate::tuner::{Action, Row, Status, Want, differs_status, sysctl_row};

use super::TuneConfig;

pub const FILE_MAX_WHY: &str = "every segment holds 3 fds (log, index, timeindex) plus sockets";
pub const NOFILE_WHY: &str = "EMFILE on a busy broker fails produce and fetch requests";
pub const MEMLOCK_WHY: &str = "io_uring registered buffers (and rings, kernel < 5.12) lock memory";
pub const IO_URING_WHY: &str = "the storage engine and network path run on io_uring";
pub const AIO_WHY: &str = "a compio fallback and other tools on the host use Linux AIO";

/// Open files this process (and the system) should allow.
pub const NOFILE_MIN: u64 = 1 << 20;
pub const AIO_MAX_NR_MIN: u64 = 1 << 20;
pub const NOFILE_LIMITS_FILE: &str = "/etc/security/limits.d/90-sluice-nofile.conf";
pub const MEMLOCK_LIMITS_FILE: &str = "/etc/security/limits.d/90-sluice-memlock.conf";

pub fn file_max(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "fs-file-max";
    vec![
        sysctl_row(host, TUNER, "fs.file-max", Want::AtLeast(NOFILE_MIN)),
        sysctl_row(host, TUNER, "fs.nr_open", Want::AtLeast(NOFILE_MIN)),
    ]
}

pub fn aio_max_nr(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    vec![sysctl_row(
        host,
        "aio-max-nr",
        "fs.aio-max-nr",
        Want::AtLeast(AIO_MAX_NR_MIN),
    )]
}

pub fn nofile(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    let n = NOFILE_MIN;
    let content = format!(
        "# Written by sluice-tune.\n* soft nofile {n}\n* hard nofile {n}\nroot soft nofile {n}\nroot hard nofile {n}\n"
    );
    vec![rlimit_row(
        host,
        "nofile",
        Rlimit::Nofile,
        NOFILE_MIN,
        NOFILE_LIMITS_FILE,
        content,
        &format!("LimitNOFILE={n}"),
    )]
}

pub fn memlock(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    let content = "# Written by sluice-tune.\n* soft memlock unlimited\n* hard memlock unlimited\nroot soft memlock unlimited\nroot hard memlock unlimited\n".to_string();
    vec![rlimit_row(
        host,
        "memlock",
        Rlimit::Memlock,
        RLIM_UNLIMITED,
        MEMLOCK_LIMITS_FILE,
        content,
        "LimitMEMLOCK=infinity",
    )]
}

fn rlimit_row(
    host: &Host,
    tuner: &'static str,
    which: Rlimit,
    min: u64,
    file: &str,
    content: String,
    unit_line: &str,
) -> Row {
    let setting = match which {
        Rlimit::Nofile => "RLIMIT_NOFILE",
        Rlimit::Memlock => "RLIMIT_MEMLOCK",
    };
    let (soft, hard) = match host.system().rlimit(which) {
        Ok(limits) => limits,
        Err(e) => return Row::unsupported(tuner, setting, format!("getrlimit: {e}")),
    };
    let configured = host
        .read(Path::new(file))
        .is_ok_and(|c| c == content.trim());
    let mut current = format!("soft {}, hard {}", show_limit(soft), show_limit(hard));
    if configured {
        current.push_str(" (limits.d set)");
    }
    let process_ok = soft >= min;
    let note = if process_ok {
        String::new()
    } else {
        format!("this process's limit; systemd units need {unit_line}")
    };
    Row {
        tuner,
        setting: setting.into(),
        current,
        recommended: if min == RLIM_UNLIMITED {
            "unlimited".into()
        } else {
            format!(">= {min}")
        },
        status: differs_status(host, process_ok || configured),
        note,
        actions: vec![Action::WriteConfig {
            path: file.into(),
            content,
        }],
    }
}

fn show_limit(v: u64) -> String {
    if v == RLIM_UNLIMITED {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

pub fn io_uring(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "io-uring";
    let sysctl = Path::new("/proc/sys/kernel/io_uring_disabled");
    let disabled = match host.read(sysctl) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        other => Some(other),
    };
    let mut rows = Vec::new();
    let disabled_value = match disabled {
        None => {
            rows.push(Row {
                tuner: TUNER,
                setting: "kernel.io_uring_disabled".into(),
                current: "absent".into(),
                recommended: "0".into(),
                status: Status::Ok,
                note: "kernel < 6.6: io_uring cannot be disabled by sysctl".into(),
                actions: Vec::new(),
            });
            None
        }
        Some(_) => {
            let row = sysctl_row(
                host,
                TUNER,
                "kernel.io_uring_disabled",
                Want::Exact("0".into()),
            );
            let value = row.current.clone();
            rows.push(row);
            Some(value)
        }
    };
    let probe = host.system().probe_io_uring();
    let (current, ok, actions) = match probe {
        Ok(()) => ("works".to_string(), true, Vec::new()),
        Err(e) => {
            let hint = match disabled_value.as_deref() {
                Some("1") | Some("2") => "set kernel.io_uring_disabled=0".to_string(),
                _ => "check seccomp (containers block io_uring by default) and RLIMIT_MEMLOCK"
                    .to_string(),
            };
            (
                format!("fails: {e}"),
                false,
                vec![Action::Manual { text: hint }],
            )
        }
    };
    rows.push(Row {
        tuner: TUNER,
        setting: "io_uring_setup".into(),
        current,
        recommended: "works".into(),
        status: if ok { Status::Ok } else { Status::Differs },
        note: String::new(),
        actions,
    });
    rows
}
