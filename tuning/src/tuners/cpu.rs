//! CPU tuners: frequency governor and boost, clocksource, and the CPU topology helpers the IRQ
//! tuner uses (online CPUs, hyperthread siblings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::Host;
use crate::tuner::{Action, Row, Want, differs_status, file_row};

use super::TuneConfig;

const CPU_DIR: &str = "/sys/devices/system/cpu";

pub const GOVERNOR_WHY: &str = "powersave/ondemand ramp clocks late: latency spikes on bursts";
pub const BOOST_WHY: &str = "turbo frequencies shorten per-request CPU time";
pub const CLOCKSOURCE_WHY: &str = "tsc reads time in the vDSO; hpet/acpi_pm cost a syscall";

/// Every CPU's scaling_governor set to `performance`; one row for all CPUs.
pub fn governor(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "cpu-governor";
    let mut files: Vec<PathBuf> = Vec::new();
    for cpu in online_cpus(host) {
        let path = Path::new(CPU_DIR).join(format!("cpu{cpu}/cpufreq/scaling_governor"));
        if host.exists(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return vec![Row::unsupported(
            TUNER,
            "scaling_governor",
            "no cpufreq driver (VM or firmware-managed clocks)",
        )];
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut actions = Vec::new();
    let mut unreadable = 0;
    for path in &files {
        match host.read(path) {
            Ok(gov) => {
                if gov != "performance" {
                    actions.push(Action::WriteFile {
                        path: path.clone(),
                        value: "performance".into(),
                    });
                }
                *counts.entry(gov).or_default() += 1;
            }
            Err(_) => unreadable += 1,
        }
    }
    let available = files[0].with_file_name("scaling_available_governors");
    if let Ok(list) = host.read(&available)
        && !list.split_whitespace().any(|g| g == "performance")
    {
        return vec![Row::unsupported(
            TUNER,
            "scaling_governor",
            format!("driver offers only: {list}"),
        )];
    }
    let current: Vec<String> = counts.iter().map(|(g, n)| format!("{g} x{n}")).collect();
    let ok = actions.is_empty() && unreadable == 0;
    // Script and apply write every CPU so a boot script is complete.
    let all: Vec<Action> = files
        .iter()
        .map(|p| Action::WriteFile {
            path: p.clone(),
            value: "performance".into(),
        })
        .collect();
    vec![Row {
        tuner: TUNER,
        setting: format!("scaling_governor ({} cpus)", files.len()),
        current: current.join(", "),
        recommended: "performance".into(),
        status: differs_status(host, ok),
        note: String::new(),
        actions: all,
    }]
}

/// Frequency boost on: acpi-cpufreq/amd `cpufreq/boost`=1, or intel_pstate `no_turbo`=0.
pub fn boost(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "cpu-boost";
    let boost = format!("{CPU_DIR}/cpufreq/boost");
    let no_turbo = format!("{CPU_DIR}/intel_pstate/no_turbo");
    if host.exists(Path::new(&boost)) {
        vec![file_row(
            host,
            TUNER,
            "cpufreq/boost",
            &boost,
            Want::Exact("1".into()),
        )]
    } else if host.exists(Path::new(&no_turbo)) {
        vec![file_row(
            host,
            TUNER,
            "intel_pstate/no_turbo",
            &no_turbo,
            Want::Exact("0".into()),
        )]
    } else {
        vec![Row::unsupported(
            TUNER,
            "boost",
            "no cpufreq boost control (VM or firmware-managed)",
        )]
    }
}

/// The kernel clocksource set to tsc when tsc is offered.
pub fn clocksource(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "clocksource";
    let dir = Path::new(CPU_DIR)
        .parent()
        .unwrap_or(Path::new("/"))
        .join("clocksource/clocksource0");
    let available = match host.read(&dir.join("available_clocksource")) {
        Ok(list) => list,
        Err(_) => {
            return vec![Row::unsupported(
                TUNER,
                "current_clocksource",
                "no clocksource in sysfs",
            )];
        }
    };
    if !available.split_whitespace().any(|c| c == "tsc") {
        return vec![Row::unsupported(
            TUNER,
            "current_clocksource",
            format!("tsc not offered (unstable TSC?): {available}"),
        )];
    }
    let path = dir.join("current_clocksource");
    vec![file_row(
        host,
        TUNER,
        "current_clocksource",
        &path.to_string_lossy(),
        Want::Exact("tsc".into()),
    )]
}

/// Online CPUs (from /sys/devices/system/cpu/online), falling back to cpuN directories.
pub fn online_cpus(host: &Host) -> Vec<u32> {
    if let Ok(list) = host.read(&Path::new(CPU_DIR).join("online"))
        && let Some(cpus) = parse_cpu_list(&list)
    {
        return cpus;
    }
    host.list(Path::new(CPU_DIR))
        .iter()
        .filter_map(|n| n.strip_prefix("cpu").and_then(|d| d.parse().ok()))
        .collect()
}

/// The hyperthread siblings of `cpu`, including itself.
pub fn siblings(host: &Host, cpu: u32) -> Vec<u32> {
    let path = Path::new(CPU_DIR).join(format!("cpu{cpu}/topology/thread_siblings_list"));
    host.read(&path)
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| vec![cpu])
}

/// Parses "0-3,8,10-11"; None on malformed input.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Formats CPUs as a compact list ("0-3,8").
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
