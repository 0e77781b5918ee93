//! check / apply / revert / script against a fake /proc and /sys tree in a temp dir, with a
//! FakeSystem for rlimits, systemd units and the io_uring probe. Nothing here touches the
//! real host's settings.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use tempfile::TempDir;
use tuning::tuner::Status;
use tuning::tuners::{self, IrqMode, TuneConfig, disk, irq};
use tuning::{FakeSystem, Host, TuneArgs};

/// A fake machine: 4 CPUs (2 cores x 2 threads), an NVMe data disk, one NIC, systemd running,
/// every setting at a typical distro default (i.e. untuned).
struct Fake {
    dir: TempDir,
}

const NVME_IRQS: [u32; 3] = [40, 41, 42];
const NIC_IRQS: [u32; 4] = [30, 31, 32, 33];
const BALLAST_BYTES: &str = "1048576";

impl Fake {
    fn untuned() -> Fake {
        let fake = Fake {
            dir: TempDir::new().expect("temp dir"),
        };
        fake.cpus(4, 2);
        fake.put("/sys/devices/system/cpu/intel_pstate/no_turbo", "1");
        fake.put(
            "/sys/devices/system/clocksource/clocksource0/available_clocksource",
            "tsc hpet acpi_pm",
        );
        fake.put(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            "hpet",
        );
        fake.put(
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never",
        );
        fake.put(
            "/sys/kernel/mm/transparent_hugepage/defrag",
            "always defer defer+madvise [madvise] never",
        );
        for (name, value) in [
            ("vm/swappiness", "60"),
            ("vm/dirty_background_ratio", "10"),
            ("vm/dirty_ratio", "20"),
            ("vm/dirty_expire_centisecs", "3000"),
            ("vm/dirty_writeback_centisecs", "500"),
            ("net/core/somaxconn", "4096"),
            ("net/ipv4/tcp_max_syn_backlog", "512"),
            ("net/core/netdev_max_backlog", "1000"),
            ("net/core/rmem_max", "212992"),
            ("net/core/wmem_max", "212992"),
            ("net/ipv4/tcp_rmem", "4096\t131072\t6291456"),
            ("net/ipv4/tcp_wmem", "4096\t16384\t4194304"),
            ("fs/file-max", "9223372036854775807"),
            ("fs/nr_open", "1048576"),
            ("fs/aio-max-nr", "65536"),
            ("kernel/io_uring_disabled", "0"),
        ] {
            fake.put(&format!("/proc/sys/{name}"), value);
        }
        // NVMe namespace -> controller -> PCI function holding the MSI-X vectors.
        let pci_nvme = "/sys/devices/pci0000:00/0000:00:04.0";
        fake.mkdir(&format!("{pci_nvme}/nvme/nvme0"));
        for irq in NVME_IRQS {
            fake.put(&format!("{pci_nvme}/msi_irqs/{irq}"), "msix");
        }
        fake.put("/sys/block/nvme0n1/dev", "259:0");
        fake.put(
            "/sys/block/nvme0n1/queue/scheduler",
            "none [mq-deadline] kyber",
        );
        fake.put("/sys/block/nvme0n1/queue/nomerges", "0");
        fake.link(
            "/sys/block/nvme0n1/device",
            "../../devices/pci0000:00/0000:00:04.0/nvme/nvme0",
        );
        // A virtio NIC: msi_irqs sit on the PCI parent of virtio2.
        let pci_nic = "/sys/devices/pci0000:00/0000:00:03.0";
        fake.mkdir(&format!("{pci_nic}/virtio2"));
        for irq in NIC_IRQS {
            fake.put(&format!("{pci_nic}/msi_irqs/{irq}"), "msix");
        }
        fake.link(
            "/sys/class/net/eth0/device",
            "../../../devices/pci0000:00/0000:00:03.0/virtio2",
        );
        fake.mkdir("/sys/class/net/lo");
        let mut interrupts = String::from("           CPU0       CPU1       CPU2       CPU3\n");
        for irq in NIC_IRQS.iter().chain(&NVME_IRQS) {
            fake.put(&format!("/proc/irq/{irq}/smp_affinity_list"), "0-3");
            interrupts.push_str(&format!(
                " {irq}:  1  2  3  4  PCI-MSIX-0000:00:03.0  {irq}-edge  dev{irq}\n"
            ));
        }
        interrupts.push_str("LOC:  100 100 100 100  Local timer interrupts\n");
        fake.put("/proc/interrupts", &interrupts);
        fake.put("/proc/1/comm", "systemd");
        fake.put("/proc/77/comm", "irqbalance");
        fake.mkdir("/run/systemd/system");
        fake.mkdir("/data");
        fake
    }

    fn cpus(&self, count: u32, threads_per_core: u32) {
        let cores = count / threads_per_core;
        self.put(
            "/sys/devices/system/cpu/online",
            &format!("0-{}", count - 1),
        );
        for cpu in 0..count {
            let base = format!("/sys/devices/system/cpu/cpu{cpu}");
            self.put(&format!("{base}/cpufreq/scaling_governor"), "powersave");
            self.put(
                &format!("{base}/cpufreq/scaling_available_governors"),
                "performance powersave",
            );
            let core = cpu % cores;
            let sibs: Vec<String> = (0..threads_per_core)
                .map(|t| (core + t * cores).to_string())
                .collect();
            self.put(
                &format!("{base}/topology/thread_siblings_list"),
                &sibs.join(","),
            );
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    fn put(&self, p: &str, content: &str) {
        let full = self.path(p);
        fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        fs::write(full, format!("{content}\n")).expect("write");
    }

    fn get(&self, p: &str) -> String {
        fs::read_to_string(self.path(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .to_string()
    }

    fn mkdir(&self, p: &str) {
        fs::create_dir_all(self.path(p)).expect("mkdir");
    }

    fn link(&self, p: &str, target: &str) {
        let full = self.path(p);
        fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        symlink(target, full).expect("symlink");
    }

    fn host(&self, system: FakeSystem) -> Host {
        Host::new(self.dir.path(), Box::new(system))
    }

    /// Every regular file under the root with its content (symlinks not followed).
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).expect("read_dir") {
                let entry = entry.expect("entry");
                let ty = entry.file_type().expect("file type");
                if ty.is_dir() {
                    walk(&entry.path(), out);
                } else if ty.is_file() {
                    out.insert(entry.path(), fs::read(entry.path()).expect("read"));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

/// A root host with low rlimits, irqbalance enabled and running, fstrim.timer disabled.
fn untuned_system(root: bool) -> FakeSystem {
    let mut sys = FakeSystem::new(root)
        .with_unit("irqbalance.service", true, true)
        .with_unit("fstrim.timer", false, false);
    sys.nofile = (1024, 4096);
    sys.memlock = (8 << 20, 8 << 20);
    sys
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TuneArgs,
}

/// Runs a sluice-tune command line against `host`; returns (exit code, stdout).
fn run(host: &Host, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["sluice-tune"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    let mut out = Vec::new();
    let code = tuning::run_on(host, cli.args.command, &mut out).expect("command runs");
    (code, String::from_utf8(out).expect("utf8"))
}

const DATA: [&str; 4] = ["--data-dir", "/data", "--ballast-bytes", BALLAST_BYTES];

fn with_data<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend_from_slice(&DATA);
    v
}

fn cfg() -> TuneConfig {
    TuneConfig {
        data_dir: "/data".into(),
        irq_mode: IrqMode::Auto,
        ballast_bytes: 1 << 20,
    }
}

fn statuses(host: &Host) -> BTreeMap<String, Status> {
    let all = tuners::select(&[]).expect("all tuners");
    tuners::assess(host, &cfg(), &all)
        .into_iter()
        .map(|r| (format!("{}/{}", r.tuner, r.setting), r.status))
        .collect()
}

#[test]
fn check_reports_an_untuned_host_and_changes_nothing() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    let before = fake.snapshot();
    let (code, table) = run(&host, &with_data(&["check"]));
    assert_eq!(code, 1, "{table}");
    assert_eq!(fake.snapshot(), before, "check must not write");
    for expected in [
        "scaling_governor (4 cpus)",
        "powersave x4",
        "nvme0n1 scheduler",
        "mq-deadline",
        "eth0 irqs (4)",
        "nvme0n1 irqs (3)",
        "running, enabled",
        "vm.dirty_background_ratio",
    ] {
        assert!(table.contains(expected), "missing {expected:?} in\n{table}");
    }
    let s = statuses(&host);
    assert_eq!(s["cpu-governor/scaling_governor (4 cpus)"], Status::Differs);
    assert_eq!(s["cpu-boost/intel_pstate/no_turbo"], Status::Differs);
    assert_eq!(s["disk-scheduler/nvme0n1 scheduler"], Status::Differs);
    assert_eq!(s["net-backlog/net.core.somaxconn"], Status::Ok);
    assert_eq!(s["net-buffers/net.ipv4.tcp_rmem"], Status::Differs);
    assert_eq!(s["fs-file-max/fs.file-max"], Status::Ok);
    assert_eq!(s["transparent-hugepages/thp enabled"], Status::Differs);
    assert_eq!(s["transparent-hugepages/thp defrag"], Status::Ok);
    assert_eq!(s["io-uring/io_uring_setup"], Status::Ok);
    assert_eq!(s["ballast//data/.sluice-ballast"], Status::Differs);

    let (code, json) = run(
        &host,
        &with_data(&["check", "--json", "--only", "vm-swappiness"]),
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(code, 1);
    assert_eq!(doc["rows"][0]["setting"], "vm.swappiness");
    assert_eq!(doc["rows"][0]["current"], "60");
    assert_eq!(doc["rows"][0]["status"], "differs");
    assert!(
        doc["why"]["vm-swappiness"]
            .as_str()
            .is_some_and(|w| w.contains("swapping"))
    );
    assert_eq!(doc["exit_code"], 1);
}

#[test]
fn check_without_root_says_needs_root() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(false));
    let s = statuses(&host);
    assert_eq!(s["vm-swappiness/vm.swappiness"], Status::NeedsRoot);
    assert_eq!(s["irq-affinity/eth0 irqs (4)"], Status::NeedsRoot);
    assert_eq!(s["clocksource/current_clocksource"], Status::NeedsRoot);
    // The ballast lives in the broker's own directory: no root needed.
    assert_eq!(s["ballast//data/.sluice-ballast"], Status::Differs);
    let (code, table) = run(
        &host,
        &with_data(&["check", "--only", "vm-swappiness,net-backlog"]),
    );
    assert_eq!(code, 1);
    assert!(table.contains("needs root"), "{table}");
}

#[test]
fn apply_reaches_every_recommendation_and_is_idempotent() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    let (code, out) = run(&host, &with_data(&["apply"]));
    assert_eq!(code, 0, "{out}");

    for cpu in 0..4 {
        assert_eq!(
            fake.get(&format!(
                "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
            )),
            "performance"
        );
    }
    assert_eq!(
        fake.get("/sys/devices/system/cpu/intel_pstate/no_turbo"),
        "0"
    );
    assert_eq!(
        fake.get("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "tsc"
    );
    assert_eq!(fake.get("/sys/block/nvme0n1/queue/scheduler"), "none");
    assert_eq!(fake.get("/sys/block/nvme0n1/queue/nomerges"), "2");
    assert_eq!(
        fake.get("/sys/kernel/mm/transparent_hugepage/enabled"),
        "madvise"
    );
    assert_eq!(fake.get("/proc/sys/vm/swappiness"), "1");
    assert_eq!(fake.get("/proc/sys/vm/dirty_ratio"), "40");
    assert_eq!(fake.get("/proc/sys/net/ipv4/tcp_max_syn_backlog"), "4096");
    assert_eq!(
        fake.get("/proc/sys/net/ipv4/tcp_rmem"),
        "4096 131072 16777216"
    );
    // Never lowered: file-max was already huge.
    assert_eq!(fake.get("/proc/sys/fs/file-max"), "9223372036854775807");
    assert_eq!(fake.get("/proc/sys/fs/aio-max-nr"), "1048576");
    // 4 CPUs -> mq: each device's IRQs one per CPU, round robin.
    for (i, irq) in NIC_IRQS.iter().enumerate() {
        assert_eq!(
            fake.get(&format!("/proc/irq/{irq}/smp_affinity_list")),
            i.to_string()
        );
    }
    assert_eq!(fake.get("/proc/irq/42/smp_affinity_list"), "2");
    assert!(
        fake.get("/etc/security/limits.d/90-sluice-nofile.conf")
            .contains("* soft nofile 1048576")
    );
    let ballast = fs::metadata(fake.path("/data/.sluice-ballast")).expect("ballast");
    assert!(std::os::unix::fs::MetadataExt::blocks(&ballast) * 512 >= 1 << 20);
    let irqbalance = host.system().unit_state("irqbalance.service");
    assert_eq!(
        (irqbalance.enabled, irqbalance.active),
        (Some(false), Some(false))
    );
    assert_eq!(host.system().unit_state("fstrim.timer").enabled, Some(true));

    // The irqbalance process is gone after the stop (the fake keeps its /proc entry).
    fs::remove_dir_all(fake.path("/proc/77")).expect("rm");
    let s = statuses(&host);
    let bad: Vec<_> = s.iter().filter(|(_, st)| **st != Status::Ok).collect();
    assert!(bad.is_empty(), "still not ok after apply: {bad:?}");
    let (code, table) = run(&host, &with_data(&["check"]));
    assert_eq!(code, 0, "{table}");

    let state_before = fake.get("/var/lib/sluice/tune-state.json");
    let snapshot = fake.snapshot();
    let (code, out) = run(&host, &with_data(&["apply"]));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "nothing changed: all ok");
    assert_eq!(fake.snapshot(), snapshot, "second apply wrote something");
    assert_eq!(fake.get("/var/lib/sluice/tune-state.json"), state_before);
}

#[test]
fn revert_restores_the_original_host() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    let before = fake.snapshot();
    let units_before = (
        host.system().unit_state("irqbalance.service"),
        host.system().unit_state("fstrim.timer"),
    );
    let (code, _) = run(&host, &with_data(&["apply"]));
    assert_eq!(code, 0);
    assert_ne!(fake.snapshot(), before);
    let (code, out) = run(&host, &["revert"]);
    assert_eq!(code, 0, "{out}");
    // Files come back byte for byte except the trailing newline the kernel (and we) add.
    let norm = |m: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, String> {
        m.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).trim().to_string()))
            .collect()
    };
    assert_eq!(
        norm(fake.snapshot()),
        norm(before),
        "revert left differences"
    );
    assert!(!fake.path("/var/lib/sluice/tune-state.json").exists());
    assert!(!fake.path("/data/.sluice-ballast").exists());
    let units_after = (
        host.system().unit_state("irqbalance.service"),
        host.system().unit_state("fstrim.timer"),
    );
    assert_eq!(units_after, units_before);
    let (code, out) = run(&host, &["revert"]);
    assert_eq!((code, out.trim()), (0, "nothing recorded to revert"));
}

#[test]
fn state_keeps_the_first_previous_value_and_revert_only_selected() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    run(
        &host,
        &with_data(&["apply", "--only", "vm-swappiness,vm-dirty"]),
    );
    assert_eq!(fake.get("/proc/sys/vm/swappiness"), "1");
    fake.put("/proc/sys/vm/swappiness", "30"); // someone changes it behind our back
    run(&host, &with_data(&["apply", "--only", "vm-swappiness"]));
    assert_eq!(fake.get("/proc/sys/vm/swappiness"), "1");
    let state = fake.get("/var/lib/sluice/tune-state.json");
    assert_eq!(
        state.matches("/vm/swappiness").count(),
        1,
        "one entry per path: {state}"
    );
    assert!(
        state.contains("\"previous\": \"60\""),
        "the original value is kept: {state}"
    );
    let (code, _) = run(&host, &["revert", "--only", "vm-swappiness"]);
    assert_eq!(code, 0);
    assert_eq!(fake.get("/proc/sys/vm/swappiness"), "60");
    assert_eq!(
        fake.get("/proc/sys/vm/dirty_ratio"),
        "40",
        "vm-dirty was not selected"
    );
    let state = fake.get("/var/lib/sluice/tune-state.json");
    assert!(
        state.contains("dirty_ratio") && !state.contains("swappiness"),
        "{state}"
    );
}

#[test]
fn dry_run_changes_nothing() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    let before = fake.snapshot();
    let (code, out) = run(&host, &with_data(&["apply", "--dry-run"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("would    vm-swappiness: write \"1\" to /proc/sys/vm/swappiness"),
        "{out}"
    );
    assert!(out.contains("systemctl stop irqbalance.service"), "{out}");
    assert_eq!(fake.snapshot(), before);
    assert_eq!(
        host.system().unit_state("irqbalance.service").active,
        Some(true)
    );
    let (code, out) = run(&host, &["revert", "--dry-run"]);
    assert_eq!((code, out.trim()), (0, "nothing recorded to revert"));
}

#[test]
fn apply_without_root_skips_what_needs_root() {
    let fake = Fake::untuned();
    let system = untuned_system(false);
    let host = fake.host(system);
    let (code, out) = run(
        &host,
        &with_data(&["apply", "--only", "vm-swappiness,ballast,irqbalance"]),
    );
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("(needs root)"), "{out}");
    assert_eq!(fake.get("/proc/sys/vm/swappiness"), "60");
    assert!(
        fake.path("/data/.sluice-ballast").exists(),
        "ballast needs no root"
    );
    assert_eq!(
        host.system().unit_state("irqbalance.service").active,
        Some(true)
    );
}

#[test]
fn missing_knobs_are_unsupported() {
    let fake = Fake {
        dir: TempDir::new().expect("temp dir"),
    };
    fake.put("/sys/devices/system/cpu/online", "0-1");
    fake.put(
        "/sys/devices/system/clocksource/clocksource0/available_clocksource",
        "kvm-clock acpi_pm",
    );
    fake.put(
        "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        "kvm-clock",
    );
    let mut system = FakeSystem::new(true);
    system.device = Some((0, 42)); // overlay/tmpfs: no block device
    let host = fake.host(system);
    let s = statuses(&host);
    for key in [
        "cpu-governor/scaling_governor",
        "cpu-boost/boost",
        "clocksource/current_clocksource",
        "disk-scheduler/data disk",
        "vm-swappiness/vm.swappiness",
        "fstrim/fstrim.timer",
        "ballast//data/.sluice-ballast",
    ] {
        assert_eq!(s[key], Status::Unsupported, "{key}");
    }
    // Before Linux 6.6 there is no io_uring_disabled sysctl: io_uring is simply on.
    assert_eq!(s["io-uring/kernel.io_uring_disabled"], Status::Ok);
    let (code, table) = run(&host, &with_data(&["check"]));
    assert_eq!(code, 3, "only unsupported rows besides ok ones:\n{table}");
    assert!(table.contains("no block device"), "{table}");
    assert!(table.contains("tsc not offered"), "{table}");
    // apply has nothing to do and says so.
    let (code, out) = run(&host, &with_data(&["apply"]));
    assert_eq!((code, out.trim()), (0, "nothing changed: all ok"));
}

#[test]
fn io_uring_failure_is_reported_with_the_fix() {
    let fake = Fake::untuned();
    fake.put("/proc/sys/kernel/io_uring_disabled", "2");
    let mut system = untuned_system(true);
    system.io_uring_error = Some("Operation not permitted (os error 1)".into());
    let host = fake.host(system);
    let all = tuners::select(&["io-uring".to_string()]).expect("tuner");
    let rows = tuners::assess(&host, &cfg(), &all);
    assert_eq!(rows[0].status, Status::Differs);
    assert_eq!(rows[1].status, Status::Differs);
    assert!(rows[1].current.contains("Operation not permitted"));
    let (_, out) = run(
        &host,
        &with_data(&["apply", "--dry-run", "--only", "io-uring"]),
    );
    assert!(
        out.contains("manual: set kernel.io_uring_disabled=0"),
        "{out}"
    );
    let lines = tuning::startup_report_on(&host, Path::new("/data"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("io_uring_setup") && l.contains("not permitted")),
        "{lines:?}"
    );
}

#[test]
fn unknown_tuner_is_an_error() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    let cli = Cli::try_parse_from(["t", "check", "--only", "vm-swapiness"]).expect("parses");
    let err = tuning::run_on(&host, cli.args.command, &mut Vec::new()).expect_err("unknown name");
    assert!(err.to_string().contains("known: cpu-governor"), "{err}");
}

#[test]
fn script_sets_everything_and_is_valid_sh() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    let before = fake.snapshot();
    let (code, script) = run(&host, &with_data(&["script"]));
    assert_eq!(code, 0);
    assert_eq!(fake.snapshot(), before);
    for expected in [
        "#!/bin/sh",
        "w /proc/sys/vm/swappiness 1\n",
        "w /proc/sys/net/ipv4/tcp_rmem '4096 131072 16777216'\n",
        "w /sys/devices/system/cpu/cpu3/cpufreq/scaling_governor performance\n",
        "w /proc/irq/33/smp_affinity_list 3\n",
        "w /sys/block/nvme0n1/queue/scheduler none\n",
        "cat > /etc/security/limits.d/90-sluice-nofile.conf <<'SLUICE_EOF'",
        "systemctl disable irqbalance.service",
        "systemctl enable fstrim.timer",
        "fallocate -l 1048576 /data/.sluice-ballast",
        // Settings already ok are still written, so the script restores them at boot.
        "w /proc/sys/net/core/somaxconn 4096\n",
    ] {
        assert!(
            script.contains(expected),
            "missing {expected:?} in\n{script}"
        );
    }
    let path = fake.path("/tune.sh");
    fs::write(&path, &script).expect("write script");
    let syntax = Command::new("sh")
        .arg("-n")
        .arg(&path)
        .status()
        .expect("sh");
    assert!(syntax.success(), "sh -n rejected the script");

    let (code, unit) = run(&host, &["script", "--unit"]);
    assert_eq!(code, 0);
    assert!(
        unit.contains("Type=oneshot")
            && unit.contains("ExecStart=/bin/sh /usr/local/sbin/sluice-tune.sh"),
        "{unit}"
    );
    assert!(unit.contains("Before=sluice.service") && unit.contains("WantedBy=multi-user.target"));
}

#[test]
fn startup_report_lists_what_differs_and_never_fails() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    let lines = tuning::startup_report_on(&host, Path::new("/data"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("tuning: vm-swappiness vm.swappiness is 60, recommended <= 1")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.contains("sluice tune apply --only")));
    assert!(!lines.iter().any(|l| l.contains("unsupported")));

    // A root with nothing in it: no panic, nothing but "unsupported" (not reported).
    let empty = TempDir::new().expect("temp dir");
    let bare = Host::new(empty.path(), Box::new(FakeSystem::new(true)));
    assert!(tuning::startup_report_on(&bare, Path::new("data")).is_empty());
}

#[test]
fn irq_modes_follow_the_topology() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(true));
    assert_eq!(
        irq::irq_cpus(&host, IrqMode::Auto),
        (IrqMode::Mq, vec![0, 1, 2, 3])
    );
    assert_eq!(irq::irq_cpus(&host, IrqMode::Sq).1, vec![0]);
    assert_eq!(irq::irq_cpus(&host, IrqMode::SqSplit).1, vec![0, 2]);
    assert_eq!(irq::shard_cpus(&host, IrqMode::SqSplit), vec![1, 3]);

    // 8 CPUs on 4 cores -> sq; 16 CPUs on 8 cores -> sq-split on CPU 0 and its sibling.
    fake.cpus(8, 2);
    assert_eq!(irq::irq_cpus(&host, IrqMode::Auto), (IrqMode::Sq, vec![0]));
    fake.cpus(16, 2);
    assert_eq!(
        irq::irq_cpus(&host, IrqMode::Auto),
        (IrqMode::SqSplit, vec![0, 8])
    );
    assert_eq!(irq::shard_cpus(&host, IrqMode::Auto).len(), 14);
    let (code, _) = run(&host, &with_data(&["apply", "--only", "irq-affinity"]));
    assert_eq!(code, 0);
    for irq in NIC_IRQS.iter().chain(&NVME_IRQS) {
        assert_eq!(
            fake.get(&format!("/proc/irq/{irq}/smp_affinity_list")),
            "0,8"
        );
    }
    let (code, table) = run(
        &host,
        &with_data(&["check", "--only", "irq-affinity", "--irq-mode", "sq-split"]),
    );
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("sq-split: 0,8"), "{table}");
}

#[test]
fn data_dir_on_a_partition_or_lvm_maps_to_its_disks() {
    let fake = Fake::untuned();
    fake.put("/sys/block/nvme0n1/nvme0n1p1/dev", "259:1");
    fake.put("/sys/block/nvme1n1/dev", "259:2");
    fake.put("/sys/block/nvme1n1/nvme1n1p2/dev", "259:3");
    fake.put("/sys/block/dm-0/dev", "253:0");
    fake.put("/sys/block/dm-0/slaves/nvme0n1p1/x", "");
    fake.put("/sys/block/dm-0/slaves/nvme1n1p2/x", "");
    let mut system = untuned_system(true);
    system.device = Some((259, 1));
    let host = fake.host(system);
    assert_eq!(
        disk::data_disks(&host, Path::new("/data/not/yet")),
        Ok(vec!["nvme0n1".to_string()])
    );
    let mut system = untuned_system(true);
    system.device = Some((253, 0));
    let host = fake.host(system);
    assert_eq!(
        disk::data_disks(&host, Path::new("/data")),
        Ok(vec!["nvme0n1".to_string(), "nvme1n1".to_string()])
    );
}

/// The broker embeds `TuneArgs` as `sluice tune ...`; this is that shape.
#[derive(Parser)]
#[command(name = "sluice")]
struct BrokerCli {
    #[command(subcommand)]
    command: BrokerCommand,
}

#[derive(clap::Subcommand)]
enum BrokerCommand {
    /// Host checks and tuners.
    Tune(TuneArgs),
}

#[test]
fn cli_embeds_in_the_broker_and_parses_root_anywhere() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    BrokerCli::command().debug_assert();
    for argv in [
        vec![
            "sluice",
            "tune",
            "--root",
            "/x",
            "check",
            "--only",
            "vm-dirty,irqbalance",
        ],
        vec![
            "sluice",
            "tune",
            "check",
            "--root",
            "/x",
            "--only",
            "vm-dirty",
            "--only",
            "irqbalance",
        ],
    ] {
        let BrokerCommand::Tune(args) = BrokerCli::try_parse_from(&argv).expect("parses").command;
        assert_eq!(args.root, PathBuf::from("/x"));
        match args.command {
            tuning::TuneCommand::Check(c) => {
                assert_eq!(c.selection.only, vec!["vm-dirty", "irqbalance"])
            }
            _ => panic!("not check"),
        }
    }
    assert!(
        BrokerCli::try_parse_from(["sluice", "tune", "check", "--irq-mode", "sideways"]).is_err()
    );
}

#[test]
fn ballast_create_and_emergency_remove() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(false));
    let (code, out) = run(
        &host,
        &[
            "ballast",
            "create",
            "--data-dir",
            "/data",
            "--bytes",
            "2097152",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let meta = fs::metadata(fake.path("/data/.sluice-ballast")).expect("created");
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 >= 2 << 20,
        "blocks reserved, not sparse"
    );
    let (_, table) = run(
        &host,
        &[
            "check",
            "--only",
            "ballast",
            "--data-dir",
            "/data",
            "--ballast-bytes",
            "2097152",
        ],
    );
    assert!(table.contains(" ok "), "{table}");
    let (code, out) = run(&host, &["ballast", "remove", "--data-dir", "/data"]);
    assert_eq!((code, out.contains("removed")), (0, true), "{out}");
    assert!(!fake.path("/data/.sluice-ballast").exists());
    let (_, out) = run(&host, &["ballast", "remove", "--data-dir", "/data"]);
    assert!(out.contains("was not there"), "{out}");
}

#[test]
fn unreadable_setting_needs_root() {
    use std::os::unix::fs::PermissionsExt;
    if tuning::sys::is_effective_root() {
        eprintln!("skipping: root reads files whatever their mode");
        return;
    }
    let fake = Fake::untuned();
    let file = fake.path("/proc/sys/vm/swappiness");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).expect("chmod");
    let host = fake.host(untuned_system(false));
    let s = statuses(&host);
    assert_eq!(s["vm-swappiness/vm.swappiness"], Status::NeedsRoot);
}

#[test]
fn list_names_every_tuner() {
    let fake = Fake::untuned();
    let host = fake.host(untuned_system(false));
    let (code, out) = run(&host, &["list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), tuners::TUNERS.len());
    for t in tuners::TUNERS {
        assert!(out.contains(t.name) && out.contains(t.why), "{}", t.name);
    }
}
