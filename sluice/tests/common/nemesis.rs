//! What the nemesis tests share (`nemesis.rs`, `nemesis_txn.rs`): the client program driven
//! over a line protocol while the test SIGKILLs nodes (`LineChild`), the seeded generator
//! that makes a run replayable (`Rng`), and the small environment and summary helpers.
//!
//! A `LineChild` takes commands on stdin and answers with stdout lines; its stderr is kept
//! for the failure message. Every wait checks that no node of the cluster died on its own,
//! and a failure kills the child and panics with its output and the test's own hint.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cluster::Cluster;
use super::tail;

/// How long one command (or an expected line) may take: a round's faults heal within it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(420);
/// How long the cluster may take to form.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait checks that every node is still alive.
pub const ALIVE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A client program on a line protocol (see the module doc).
pub struct LineChild {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    out: String,
    /// More for the failure message (e.g. the client's own log), from the cluster's dir.
    hint: fn(&Cluster) -> String,
}

impl LineChild {
    /// Starts `command` with piped stdin, stdout and stderr.
    pub fn spawn(
        name: &'static str,
        command: &mut Command,
        hint: fn(&Cluster) -> String,
    ) -> LineChild {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        LineChild {
            name,
            child,
            stdin,
            lines,
            stderr: Some(stderr),
            out: String::new(),
            hint,
        }
    }

    /// Every stdout line read so far.
    pub fn out(&self) -> &str {
        &self.out
    }

    pub fn send(&mut self, cluster: &mut Cluster, command: &str) {
        let sent = self
            .stdin
            .as_mut()
            .map(|s| writeln!(s, "{command}").and_then(|()| s.flush()));
        if !matches!(sent, Some(Ok(()))) {
            self.fail(cluster, &format!("cannot send `{command}`: {sent:?}"));
        }
    }

    /// Sends `command` and returns the rest of its answer (the line starting with the same
    /// two words).
    pub fn command(&mut self, cluster: &mut Cluster, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().take(2).collect();
        let prefix = words.join(" ");
        self.send(cluster, command);
        self.expect(cluster, &prefix, "")
    }

    /// Waits for a stdout line starting with `prefix` and ending with `suffix`; returns the
    /// rest of it. Checks meanwhile that no node died on its own.
    pub fn expect(&mut self, cluster: &mut Cluster, prefix: &str, suffix: &str) -> String {
        self.expect_any(cluster, &[prefix], suffix).1
    }

    /// `expect` for the first line starting with any of `prefixes`: which one, and the rest.
    pub fn expect_any(
        &mut self,
        cluster: &mut Cluster,
        prefixes: &[&str],
        suffix: &str,
    ) -> (usize, String) {
        let prefix = prefixes.join("` or `");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Err(dead) = cluster.check_alive() {
                self.fail(cluster, &dead);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(
                    cluster,
                    &format!("no `{prefix}` within {COMMAND_TIMEOUT:?}"),
                );
            }
            match self.lines.recv_timeout(left.min(ALIVE_CHECK_INTERVAL)) {
                Ok(line) => {
                    self.out.push_str(&line);
                    self.out.push('\n');
                    let found = prefixes
                        .iter()
                        .enumerate()
                        .find_map(|(i, p)| line.strip_prefix(p).map(|rest| (i, rest)));
                    if let Some((i, rest)) = found
                        && line.ends_with(suffix)
                    {
                        return (i, rest.trim().to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => self.fail(
                    cluster,
                    &format!("exited while the test waited for `{prefix}`"),
                ),
            }
        }
    }

    /// Waits for a `PROGRESS <n>` line with n >= `at_least`; returns n.
    pub fn progress_at_least(&mut self, cluster: &mut Cluster, at_least: u64) -> u64 {
        match self.progress_or_result(cluster, at_least) {
            Ok(n) => n,
            Err(result) => self.fail(cluster, &format!("RESULT {result} before PROGRESS")),
        }
    }

    /// Waits for a `PROGRESS <n>` line with n >= `at_least` (`Ok(n)`), or for the program's
    /// `RESULT` line if it comes first (`Err(rest)`).
    pub fn progress_or_result(
        &mut self,
        cluster: &mut Cluster,
        at_least: u64,
    ) -> Result<u64, String> {
        loop {
            let (which, rest) = self.expect_any(cluster, &["PROGRESS", "RESULT"], "");
            if which == 1 {
                return Err(rest);
            }
            let n: u64 = rest
                .parse()
                .unwrap_or_else(|_| self.fail(cluster, &format!("bad PROGRESS {rest}")));
            if n >= at_least {
                return Ok(n);
            }
        }
    }

    /// Closes stdin and waits for a successful exit.
    pub fn wait_success(&mut self, cluster: &mut Cluster) {
        self.stdin = None;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => self.fail(cluster, &format!("exited with {status}")),
                _ if Instant::now() >= deadline => self.fail(cluster, "did not exit"),
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn fail(&mut self, cluster: &mut Cluster, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        panic!(
            "{}: {why}\n--- its stderr ---\n{}\n--- its stdout ---\n{}\n{}",
            self.name,
            tail(&stderr, 20_000),
            tail(&self.out, 4_000),
            (self.hint)(cluster),
        );
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits until every node's Metadata lists `nodes` brokers.
pub fn wait_for_brokers(cluster: &Cluster, nodes: usize) {
    cluster.wait_until("every node lists every broker", FORM_TIMEOUT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, Some(&[]))?;
            if md.brokers.len() != nodes {
                return Err(format!("node {node}: {} brokers", md.brokers.len()));
            }
        }
        Ok(())
    });
}

/// SplitMix64: a seeded generator, so a failing seed replays the same rounds.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Indexes into `kinds` of the kinds the comma-separated `env` variable names (all when
/// unset), for a run aimed at some of them.
pub fn allowed_kinds(env: &str, kinds: &[&str]) -> Vec<usize> {
    let Ok(names) = std::env::var(env) else {
        return (0..kinds.len()).collect();
    };
    let picked: Vec<usize> = names
        .split(',')
        .map(|name| {
            kinds
                .iter()
                .position(|k| *k == name.trim())
                .unwrap_or_else(|| panic!("{env}: unknown kind {name:?}; kinds: {kinds:?}"))
        })
        .collect();
    assert!(!picked.is_empty(), "{env} names no kind");
    picked
}

pub fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// A seed from the clock, below 2^53 so a Python client's `random.Random(seed)` and the
/// test agree on it whatever parses it.
pub fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        % (1 << 53)
}

/// The value of `key=value` in a summary line.
pub fn field(summary: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {summary}"))
        .to_string()
}
