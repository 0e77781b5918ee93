//! The systemd fstrim timer: periodic TRIM instead of the `discard` mount option, which
//! issues a discard with every delete and adds latency to segment deletion.

use crate::host::{Host, UnitOp};
use crate::tuner::{Action, Row, differs_status};

use super::TuneConfig;

pub const WHY: &str = "periodic TRIM keeps SSD write latency low; online discard stalls";
const UNIT: &str = "fstrim.timer";

pub fn fstrim(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "fstrim";
    if !host.systemd_running() {
        return vec![Row::unsupported(
            TUNER,
            UNIT,
            "systemd is not the running init",
        )];
    }
    let state = host.system().unit_state(UNIT);
    let Some(enabled) = state.enabled else {
        return vec![Row::unsupported(
            TUNER,
            UNIT,
            "fstrim.timer is not installed (util-linux)",
        )];
    };
    let active = state.active == Some(true);
    let mut actions = Vec::new();
    if !enabled {
        actions.push(Action::Unit {
            unit: UNIT.into(),
            op: UnitOp::Enable,
        });
    }
    if !active {
        actions.push(Action::Unit {
            unit: UNIT.into(),
            op: UnitOp::Start,
        });
    }
    let ok = actions.is_empty();
    if ok {
        // The boot script re-asserts both (idempotent).
        actions = vec![
            Action::Unit {
                unit: UNIT.into(),
                op: UnitOp::Enable,
            },
            Action::Unit {
                unit: UNIT.into(),
                op: UnitOp::Start,
            },
        ];
    }
    vec![Row {
        tuner: TUNER,
        setting: UNIT.into(),
        current: format!(
            "{}, {}",
            if enabled { "enabled" } else { "disabled" },
            if active { "active" } else { "inactive" }
        ),
        recommended: "enabled, active".into(),
        status: differs_status(host, ok),
        note: String::new(),
        actions,
    }]
}
