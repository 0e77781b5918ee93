//! iotune end to end on a temp directory: a short, bounded run writes a readable profile and
//! leaves no test files behind. Skipped (with a message) where io_uring is unavailable.

use std::time::Duration;

use tuning::iotune::{self, IotuneOptions, PROFILE_FILE_NAME};

#[test]
fn short_run_writes_a_profile_and_cleans_up() {
    if let Err(e) = io_uring::IoUring::new(8) {
        eprintln!("skipping: io_uring unavailable here: {e}");
        return;
    }
    let dir = tempfile::TempDir::new().expect("temp dir");
    let opts = IotuneOptions {
        data_dir: dir.path().to_path_buf(),
        duration: Duration::from_millis(400),
        file_bytes: iotune::FILE_BYTES_MIN,
        output: None,
    };
    let profile = iotune::run(&opts).expect("iotune runs");
    assert!(profile.seq_write.bytes_per_sec > 0);
    assert!(profile.seq_read.bytes_per_sec > 0);
    assert_eq!(
        profile.rand_read.points.len(),
        iotune::RAND_QUEUE_DEPTHS.len()
    );
    assert!(profile.rand_read.iops_max > 0);
    let sync = &profile.fdatasync_latency_us;
    assert!(
        sync.samples > 0 && sync.p50 <= sync.p99 && sync.p99 <= sync.p999 && sync.p999 <= sync.max
    );
    assert!(iotune::RAND_QUEUE_DEPTHS.contains(&(profile.recommended.io_queue_depth as usize)));
    // No timed assertion (house rule); the deadlines are exercised, not their precision.
    assert!(profile.duration_s > 0.0);

    let read_back = tuning::read_io_profile(dir.path())
        .expect("readable")
        .expect("present");
    assert_eq!(read_back, profile);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![PROFILE_FILE_NAME.to_string()],
        "test files left behind"
    );
}

#[test]
fn duration_is_bounded_and_missing_profile_is_none() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let opts = IotuneOptions {
        data_dir: dir.path().to_path_buf(),
        duration: Duration::from_secs(iotune::DURATION_S_MAX + 1),
        file_bytes: iotune::FILE_BYTES_MIN,
        output: None,
    };
    assert!(iotune::run(&opts).is_err());
    assert_eq!(tuning::read_io_profile(dir.path()).expect("no error"), None);
}
