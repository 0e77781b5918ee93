//! Host checks and tuners for Sluice (`sluice tune`, like `rpk redpanda tune` / `rpk iotune`).
//!
//! Owns: reading and changing host settings that matter to a broker (CPU frequency, IRQ
//! affinity, block scheduler, THP, vm/net/fs sysctls, rlimits, io_uring availability, fstrim,
//! a disk-full ballast file), recording and reverting those changes, the boot script, and
//! `iotune`, which measures the data disk and writes `io-profile.json` for the broker.
//! Does not own: anything in the broker's data path; the broker only calls
//! [`startup_report`], reads [`read_io_profile`], and may use [`irq::shard_cpus`].
//!
//! Invariants:
//! - Every file access goes through [`Host`], rooted at a directory; non-file facts go through
//!   the [`System`] trait. Tests run against a fake tree and [`FakeSystem`].
//! - `check` and `startup_report` never change the host; `apply` writes only what differs and
//!   records the first previous value of everything it changes, so `revert` restores the host.
//! - `unsafe` lives in `sys` (libc calls) and `iotune::ring` (io_uring SQEs) only.
#![deny(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod host;
pub mod iotune;
pub mod script;
pub mod startup;
pub mod sys;
pub mod tuner;
pub mod tuners;

pub use cli::{TuneArgs, TuneCommand, run_cli, run_on};
pub use host::{FakeSystem, Host, RealSystem, System};
pub use iotune::{IoProfile, read_profile as read_io_profile};
pub use startup::{startup_report, startup_report_on};
pub use sys::raise_nofile_soft_limit;
pub use tuners::{IrqMode, TuneConfig, irq};
