//! Recovery fed damaged files: torn tails, flipped bits, damaged or missing indexes,
//! garbage after a preallocated tail, a missing checkpoint.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use engine::batch::{build_test_batch, validate_batch};
use engine::{Log, LogConfig, LogError};

fn run<F: std::future::Future>(f: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(f)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// 100-byte batches, one record each, timestamp = index.
fn batch(i: i64) -> Bytes {
    Bytes::from(build_test_batch(1, 39, i, i, (i % 251) as u8))
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Appends `n` batches, makes them durable, and drops the log without close (a crash after
/// the last fdatasync: the checkpoint still says recovery point 0).
async fn write_log(dir: &Path, config: &LogConfig, n: i64) {
    let (log, _) = Log::open(dir.into(), config.clone()).await.unwrap();
    for i in 0..n {
        log.append(batch(i), 0).await.unwrap();
    }
    log.wait_durable(n - 1).await.unwrap();
}

/// Reads the whole log and checks every batch: offsets contiguous from 0, payload intact.
async fn check_contents(log: &Log, expect: i64) {
    assert_eq!(log.log_end_offset(), expect);
    let r = log.read(0, i64::MAX, u32::MAX, true).await.unwrap();
    let bytes = log.read_bytes(&r.slices).await.unwrap();
    let mut at = 0;
    let mut next = 0;
    while at < bytes.len() {
        let (h, len) = validate_batch(&bytes[at..], 1 << 20, true).expect("intact batch");
        assert_eq!(h.base_offset(), next);
        assert_eq!(h.max_timestamp(), next, "payload belongs to offset {next}");
        next += 1;
        at += len;
    }
    assert_eq!(next, expect);
}

#[test]
fn torn_tail_is_cut_at_the_last_whole_batch() {
    for cut_into_batch in [1u64, 11, 12, 60, 61, 62, 99] {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            write_log(dir.path(), &config(), 30).await; // 3000 bytes, one segment
            let log_file = &files(dir.path(), "log")[0];
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(log_file)
                .unwrap();
            f.set_len(25 * 100 + cut_into_batch).unwrap();
            let (log, report) = Log::open(dir.path().into(), config()).await.unwrap();
            assert_eq!(report.truncations.len(), 1, "{report:?}");
            let t = &report.truncations[0];
            assert_eq!(
                (&t.file, t.position, t.bytes),
                (log_file, 2500, cut_into_batch)
            );
            check_contents(&log, 25).await;
            log.append(batch(25), 0).await.unwrap();
            log.close().await.unwrap();
            let (log, report) = Log::open(dir.path().into(), config()).await.unwrap();
            assert!(report.truncations.is_empty());
            check_contents(&log, 26).await;
        });
    }
}

#[test]
fn flipped_bit_after_recovery_point_truncates_there() {
    for (batch_no, byte) in [(0u64, 30u64), (7, 99), (19, 16), (19, 8)] {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            write_log(dir.path(), &config(), 20).await;
            let log_file = &files(dir.path(), "log")[0];
            let mut data = std::fs::read(log_file).unwrap();
            data[(batch_no * 100 + byte) as usize] ^= 0x04;
            std::fs::write(log_file, &data).unwrap();
            let (log, report) = Log::open(dir.path().into(), config()).await.unwrap();
            assert_eq!(report.truncations.len(), 1, "{report:?}");
            assert_eq!(report.truncations[0].position, batch_no * 100);
            check_contents(&log, batch_no as i64).await;
        });
    }
}

#[test]
fn flipped_bit_below_recovery_point_is_a_typed_error() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = Log::open(dir.path().into(), config()).await.unwrap();
            for i in 0..200 {
                log.append(batch(i), 0).await.unwrap();
            }
            log.close().await.unwrap(); // recovery point = log end
        }
        let logs = files(dir.path(), "log");
        assert!(logs.len() > 2);
        // Flip a bit in the last batch of the first (synced, non-active) segment.
        let mut data = std::fs::read(&logs[0]).unwrap();
        let n = data.len();
        data[n - 10] ^= 0x80;
        std::fs::write(&logs[0], &data).unwrap();
        match Log::open(dir.path().into(), config()).await {
            Err(LogError::Corrupt { path, position, .. }) => {
                assert_eq!(path, logs[0]);
                assert_eq!(position, (n - 100) as u64);
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("corruption below the recovery point must not be dropped silently"),
        }
    });
}

#[test]
fn damaged_and_missing_indexes_are_rebuilt() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = Log::open(dir.path().into(), config()).await.unwrap();
            for i in 0..300 {
                log.append(batch(i), 0).await.unwrap();
            }
            log.close().await.unwrap();
        }
        let indexes = files(dir.path(), "index");
        assert!(indexes.len() >= 3);
        // Garbage in one, shuffled entries in another, a missing pair for a third.
        std::fs::write(&indexes[0], vec![0xFFu8; 40]).unwrap();
        let mut second = std::fs::read(&indexes[1]).unwrap();
        assert!(second.len() >= 16);
        second.swap(3, 11);
        std::fs::write(&indexes[1], &second).unwrap();
        std::fs::remove_file(&indexes[2]).unwrap();
        std::fs::remove_file(indexes[2].with_extension("timeindex")).unwrap();
        let (log, report) = Log::open(dir.path().into(), config()).await.unwrap();
        assert!(report.rebuilt_indexes.contains(&indexes[0]), "{report:?}");
        assert!(report.rebuilt_indexes.contains(&indexes[1]), "{report:?}");
        check_contents(&log, 300).await;
        for probe in [0i64, 1, 77, 80, 81, 150, 299] {
            let r = log.read(probe, i64::MAX, 100, true).await.unwrap();
            let bytes = log.read_bytes(&r.slices).await.unwrap();
            let (h, _) = validate_batch(&bytes, 1 << 20, true).unwrap();
            assert_eq!(h.base_offset(), probe);
            assert_eq!(
                log.offset_for_timestamp(probe).await.unwrap(),
                Some((probe, probe))
            );
        }
    });
}

#[test]
fn garbage_after_a_preallocated_tail_is_reported_and_zeroed() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            preallocate: true,
            segment_bytes: 64 * 1024,
            ..config()
        };
        write_log(dir.path(), &config, 10).await;
        let log_file = &files(dir.path(), "log")[0];
        assert_eq!(
            std::fs::metadata(log_file).unwrap().len(),
            64 * 1024,
            "preallocated"
        );
        // A torn write: half a batch of non-zero bytes after the last good one.
        let mut data = std::fs::read(log_file).unwrap();
        data[1000..1050].copy_from_slice(&build_test_batch(1, 39, 10, 10, 1)[..50]);
        std::fs::write(log_file, &data).unwrap();
        let (log, report) = Log::open(dir.path().into(), config.clone()).await.unwrap();
        assert_eq!(report.truncations.len(), 1, "{report:?}");
        assert_eq!(
            (report.truncations[0].position, report.truncations[0].bytes),
            (1000, 50)
        );
        check_contents(&log, 10).await;
        let data = std::fs::read(log_file).unwrap();
        assert_eq!(data.len(), 64 * 1024);
        assert!(data[1000..].iter().all(|&b| b == 0), "tail zeroed again");
        drop(log);
        let (_, report) = Log::open(dir.path().into(), config).await.unwrap();
        assert!(
            report.truncations.is_empty(),
            "a zero tail is not a truncation"
        );
    });
}

#[test]
fn missing_checkpoint_scans_everything() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = Log::open(dir.path().into(), config()).await.unwrap();
            for i in 0..200 {
                log.append(batch(i), 0).await.unwrap();
            }
            log.close().await.unwrap();
        }
        std::fs::remove_file(dir.path().join("sluice.checkpoint")).unwrap();
        let (log, report) = Log::open(dir.path().into(), config()).await.unwrap();
        assert!(report.checkpoint_missing);
        assert_eq!(report.scanned_bytes, 200 * 100);
        check_contents(&log, 200).await;
    });
}

#[test]
fn a_partial_trailing_segment_after_a_torn_one_is_removed() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &config(), 200).await;
        let logs = files(dir.path(), "log");
        assert!(logs.len() >= 3);
        // Tear the second segment: the segments after it must go too.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&logs[1])
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 30).unwrap();
        let (log, report) = Log::open(dir.path().into(), config()).await.unwrap();
        assert_eq!(report.truncations.len(), 1);
        assert_eq!(report.removed_segments.len(), logs.len() - 2, "{report:?}");
        let expect = 81 + 80; // 81 batches fill a segment; the second one lost its last batch
        check_contents(&log, expect).await;
        assert!(!logs[2].exists());
    });
}

#[test]
fn an_index_entry_moved_to_another_batch_is_caught_on_read() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = Log::open(dir.path().into(), config()).await.unwrap();
            for i in 0..300 {
                log.append(batch(i), 0).await.unwrap();
            }
            log.close().await.unwrap();
        }
        // Shift the first entry of the first (trusted) segment's index one batch later: still
        // a batch boundary, still ordered, so open's validation cannot see it.
        let index = &files(dir.path(), "index")[0];
        let mut entries = std::fs::read(index).unwrap();
        assert!(entries.len() >= 16);
        let position = u32::from_be_bytes(entries[4..8].try_into().unwrap());
        entries[4..8].copy_from_slice(&(position + 100).to_be_bytes());
        std::fs::write(index, &entries).unwrap();
        let (log, report) = Log::open(dir.path().into(), config()).await.unwrap();
        assert!(
            report.rebuilt_indexes.is_empty(),
            "open does not re-read trusted indexes: {report:?}"
        );
        let entry_offset = i64::from(u32::from_be_bytes(entries[0..4].try_into().unwrap()));
        for probe in [entry_offset, entry_offset + 1, entry_offset + 2] {
            let r = log.read(probe, i64::MAX, 100, true).await.unwrap();
            let bytes = log.read_bytes(&r.slices).await.unwrap();
            let (h, _) = validate_batch(&bytes, 1 << 20, true).unwrap();
            assert_eq!(
                h.base_offset(),
                probe,
                "a read must start at the batch holding its offset"
            );
        }
        check_contents(&log, 300).await;
        log.truncate_to(entry_offset + 1).await.unwrap();
        check_contents(&log, entry_offset + 1).await;
    });
}

mod garbage {
    //! Whatever bytes are on disk, open returns Ok or a typed error and never panics; when
    //! it returns Ok, everything it serves is valid.
    use super::*;
    use proptest::prelude::*;

    /// `strict`: every served batch must be valid. Not so when the damage sits in log data
    /// below the recovery point: open re-reads only each segment's tail after its last index
    /// entry, and served bytes go out zero-copy unchecked (the batch CRC is end-to-end to the
    /// client); then only "no panic, typed errors" holds. Damaged indexes and checkpoints
    /// must never lead to serving bad data.
    fn open_and_check(dir: &Path, strict: bool) -> Result<(), LogError> {
        run(async {
            let (log, _) = Log::open(dir.into(), config()).await?;
            let r = log
                .read(log.log_start_offset(), i64::MAX, u32::MAX, true)
                .await
                .map_err(|e| match e {
                    engine::ReadError::Log(e) => e,
                    other => panic!("{other}"),
                })?;
            let bytes = log.read_bytes(&r.slices).await?;
            let mut at = 0;
            while strict && at < bytes.len() {
                let (_, len) =
                    validate_batch(&bytes[at..], 1 << 26, false).expect("served batches are valid");
                at += len;
            }
            log.append(batch(1), 0)
                .await
                .expect("the recovered log accepts appends");
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn open_never_panics_on_garbage(
            good_batches in 0i64..20,
            log_garbage in prop::collection::vec(any::<u8>(), 0..3000),
            index_garbage in prop::collection::vec(any::<u8>(), 0..100),
            time_garbage in prop::collection::vec(any::<u8>(), 0..100),
            checkpoint_garbage in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut data = Vec::new();
            for i in 0..good_batches {
                let mut b = batch(i).to_vec();
                engine::batch::patch_header(&mut b, i, 0);
                data.extend_from_slice(&b);
            }
            data.extend_from_slice(&log_garbage);
            for (at, x) in flips {
                if !data.is_empty() {
                    let i = at.index(data.len());
                    data[i] ^= x;
                }
            }
            std::fs::write(dir.path().join("00000000000000000000.log"), &data).unwrap();
            std::fs::write(dir.path().join("00000000000000000000.index"), &index_garbage).unwrap();
            std::fs::write(dir.path().join("00000000000000000000.timeindex"), &time_garbage).unwrap();
            if let Some(c) = checkpoint_garbage {
                std::fs::write(dir.path().join("sluice.checkpoint"), &c).unwrap();
            }
            match open_and_check(dir.path(), true) {
                Ok(()) | Err(LogError::Corrupt { .. }) => {}
                Err(e) => panic!("unexpected error kind: {e}"),
            }
        }

        #[test]
        fn open_never_panics_on_damaged_multi_segment_logs(
            file_pick in any::<prop::sample::Index>(),
            cut in prop::option::of(any::<prop::sample::Index>()),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
            tail in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let dir = tempfile::tempdir().unwrap();
            run(async {
                let (log, _) = Log::open(dir.path().into(), config()).await.unwrap();
                for i in 0..250 {
                    log.append(batch(i), 0).await.unwrap();
                }
                log.close().await.unwrap();
            });
            let mut all: Vec<PathBuf> = ["log", "index", "timeindex"].iter().flat_map(|e| files(dir.path(), e)).collect();
            all.push(dir.path().join("sluice.checkpoint"));
            let victim = &all[file_pick.index(all.len())];
            // After close the recovery point is the log end: every .log byte is below it.
            let synced_log_data = victim.extension().is_some_and(|e| e == "log");
            let mut data = std::fs::read(victim).unwrap();
            if let Some(c) = cut
                && !data.is_empty()
            {
                data.truncate(c.index(data.len()));
            }
            for (at, x) in flips {
                if !data.is_empty() {
                    let i = at.index(data.len());
                    data[i] ^= x;
                }
            }
            data.extend_from_slice(&tail);
            std::fs::write(victim, &data).unwrap();
            let strict = !synced_log_data;
            match open_and_check(dir.path(), strict) {
                Ok(()) | Err(LogError::Corrupt { .. }) => {}
                Err(e) => panic!("unexpected error kind: {e}"),
            }
        }
    }
}
