//! A Kafka Streams 4.3.1 application with a state store, a repartition topic and a KTable-KTable
//! join on a real 3-process cluster (issue 16; tests/java: io.sluice.reftest.StreamsJoin, whose
//! header describes the topology and the checks it makes on every output update).
//!
//! Orders (key order id, value "customer,amount") are re-keyed by customer (through the
//! repartition topic `shop-app-by-customer-repartition`), counted and summed per customer in the
//! RocksDB store `totals` (changelog `shop-app-totals-changelog`), joined with the customers'
//! table (key customer, value name) and written to `shop-customer-totals` as "name,count,sum".
//! The driver program (its own JVM) writes a seeded input at ~500 orders a second, knows every
//! customer's final totals up front and follows the output; the Streams app runs in another JVM.
//! The test, meanwhile:
//!
//! 1. (restart) once a share of the orders is counted, stops the app (SIGKILL of its JVM with
//!    `exactly_once_v2`; a clean close with `at_least_once`, which would count the orders after
//!    its last commit twice after a kill), checks that the changelog topics exist compacted and
//!    the repartition topic with cleanup.policy=delete, and starts the app again with the same application.id and a fresh state dir: it
//!    must restore every partition of `totals` from the changelog (`RESTORED` lines, records > 0)
//!    and carry on from the restored totals;
//! 2. (broker kill) once the output advances again, SIGKILLs the leader of the repartition
//!    topic's partition 0; the output must advance while the node is down; then restarts it;
//! 3. (output) waits for the driver's `RESULT`: every customer's latest output value is exactly
//!    its expected "name,count,sum", and with `exactly_once_v2` every single update is exact
//!    (counts go up one at a time, each by one of the customer's own amounts, as many updates as
//!    orders): nothing lost, doubled or seen from an aborted transaction;
//! 4. (purge) Streams deletes the repartition topic's consumed records with DeleteRecords after
//!    its commits (every `repartition.purge.interval.ms`, 1 s here): every partition's log start
//!    offset (ListOffsets earliest from its leader) must rise above 0.
//!
//! ```text
//! SLUICE_STREAMS_GUARANTEE=at_least_once SLUICE_STREAMS_SEED=<seed> \
//!   cargo test -p sluice --test streams_app -- --nocapture
//! ```
//!
//! The default guarantee is `exactly_once_v2`; the seed (printed first) fixes the input. Needs
//! the Java jars (SLUICE_TEST_JAVA_DIR, as tests/cluster_java.rs). A failure prints the
//! programs' output and the node logs and keeps the cluster's temp dir.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::nemesis::{LineChild, env_number, time_seed, wait_for_brokers};
use common::requests::{name, str_bytes};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeConfigsRequest, DescribeConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse,
};
use refstack::JavaStack;

const NODES: usize = 3;
/// StreamsJoin's topic prefix; the application.id is `<PREFIX>-app`.
const PREFIX: &str = "shop";
const PARTITIONS: i32 = 3;
/// Orders in the input: ~40 s of the driver's feed, so both faults land while it writes.
const ORDERS: u64 = 20_000;
/// The app is stopped once the output's counts add up to this share of the orders (percent).
const APP_STOP_AT_PERCENT: u64 = 15;
const GUARANTEE_ENV: &str = "SLUICE_STREAMS_GUARANTEE";
const SEED_ENV: &str = "SLUICE_STREAMS_SEED";
const EXACTLY_ONCE: &str = "exactly_once_v2";
const AT_LEAST_ONCE: &str = "at_least_once";
/// How long the repartition topic's purge and a leader lookup may take.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn streams_join_restores_from_changelog_survives_broker_kill_and_purges_repartition() {
    let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let guarantee = std::env::var(GUARANTEE_ENV).unwrap_or_else(|_| EXACTLY_ONCE.into());
    assert!(
        guarantee == EXACTLY_ONCE || guarantee == AT_LEAST_ONCE,
        "{GUARANTEE_ENV}={guarantee}: {EXACTLY_ONCE} or {AT_LEAST_ONCE}"
    );
    let seed = env_number(SEED_ENV).unwrap_or_else(time_seed);
    eprintln!("streams_app: {guarantee}, seed {seed} ({SEED_ENV}={seed} replays the input)");
    let app_id = format!("{PREFIX}-app");
    let repartition = format!("{app_id}-by-customer-repartition");
    let changelog = format!("{app_id}-totals-changelog");
    let started = Instant::now();

    // No initial rebalance delay: each app start joins the group at once.
    let mut cluster =
        Cluster::start_with_env(NODES, &[("SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")]);
    wait_for_brokers(&cluster, NODES);
    let mut command = stack.java("io.sluice.reftest.StreamsJoin");
    command.arg("driver").arg(cluster.bootstrap()).args([
        PREFIX,
        &ORDERS.to_string(),
        &seed.to_string(),
        &guarantee,
    ]);
    let mut driver = LineChild::spawn("StreamsJoin driver", &mut command, |_| String::new());
    let ready = driver.expect(&mut cluster, "READY", "");
    eprintln!("streams_app: driver ready ({ready})");

    // 1. An application restart with a fresh state dir.
    let mut app = start_app(&stack, &mut cluster, &guarantee, "state-1");
    let stopped_at = driver.progress_at_least(&mut cluster, ORDERS * APP_STOP_AT_PERCENT / 100);
    let stopped_out = app.out().to_string();
    if guarantee == EXACTLY_ONCE {
        drop(app); // LineChild's drop: SIGKILL, then wait for the JVM to go
    } else {
        app.wait_success(&mut cluster); // closes stdin: a clean close
    }
    eprintln!(
        "streams_app: app stopped ({}) at {stopped_at} counts, {:.0} s in",
        if guarantee == EXACTLY_ONCE {
            "SIGKILL"
        } else {
            "clean close"
        },
        started.elapsed().as_secs_f64()
    );
    let internal = [
        changelog.clone(),
        format!("{app_id}-customers-changelog"),
        repartition.clone(),
    ];
    for topic in &internal {
        let partitions = partition_count(&cluster, topic);
        assert_eq!(partitions, PARTITIONS, "{topic}: partitions");
        // Streams creates changelogs compacted and repartition topics as plain logs.
        let policy = cleanup_policy(&cluster, topic);
        let want = if topic.ends_with("-changelog") {
            "compact"
        } else {
            "delete"
        };
        assert_eq!(policy, want, "{topic}: cleanup.policy");
    }
    let restart_at = Instant::now();
    app = start_app(&stack, &mut cluster, &guarantee, "state-2");
    let restored = wait_restored(&mut app, &mut cluster, "totals");
    eprintln!(
        "streams_app: app restarted with a fresh state dir; restored from {changelog}: \
         {restored:?} records per partition, running {:.1} s after the restart",
        restart_at.elapsed().as_secs_f64()
    );
    for (partition, records) in &restored {
        assert!(
            *records > 0,
            "{changelog}-{partition}: nothing restored: {restored:?}"
        );
    }
    // Output written by the restarted app: above the counts now (the killed app's last
    // PROGRESS lines may still be queued).
    let at_restart =
        counts_before_result(&mut driver, &mut cluster, "restarted", "the app restarted");
    let resumed = driver.progress_at_least(&mut cluster, at_restart + 1);
    assert!(
        resumed > stopped_at,
        "counts {resumed} after the restart, {stopped_at} at the stop"
    );

    // 2. A broker SIGKILL while the app works.
    let node = cluster.leader_of(&repartition, 0, WAIT_TIMEOUT);
    cluster.kill(node);
    let at_kill = counts_before_result(&mut driver, &mut cluster, "killed", "the broker kill");
    let during = driver.progress_at_least(&mut cluster, at_kill + 1);
    cluster.restart(node);
    // The input may all be counted by now: then the RESULT comes instead.
    let after = counts(&mut driver, &mut cluster, "node-restarted")
        .and_then(|at| driver.progress_or_result(&mut cluster, at + 1));
    let early = match after {
        Ok(after) => {
            eprintln!(
                "streams_app: killed node {node} (leader of {repartition}-0) at {at_kill} counts; \
                 {during} while it was down, {after} after its restart"
            );
            None
        }
        Err(result) => {
            eprintln!(
                "streams_app: killed node {node} (leader of {repartition}-0) at {at_kill} counts; \
                 {during} while it was down; the result came before more output"
            );
            Some(result)
        }
    };

    // 3. The output.
    let result = early.unwrap_or_else(|| driver.expect(&mut cluster, "RESULT", ""));
    eprintln!(
        "streams_app: RESULT {result}, {:.0} s in",
        started.elapsed().as_secs_f64()
    );
    assert!(result.starts_with("OK"), "StreamsJoin: RESULT {result}");

    // 4. The repartition topic purged by DeleteRecords.
    let mut offsets = Vec::new();
    let took = cluster.wait_until(
        &format!("every {repartition} partition purged"),
        WAIT_TIMEOUT,
        |c| {
            offsets = start_and_end_offsets(c, &repartition)?;
            match offsets.iter().position(|&(start, _)| start <= 0) {
                Some(p) => Err(format!("partition {p}: (start, end) {offsets:?}")),
                None => Ok(()),
            }
        },
    );
    eprintln!(
        "streams_app: {repartition} (log start, end) per partition {offsets:?}, {took:?} after the result"
    );

    app.wait_success(&mut cluster);
    let errors: Vec<&str> = stopped_out
        .lines()
        .chain(app.out().lines())
        .filter(|line| line.starts_with("STREAMS_ERROR"))
        .collect();
    eprintln!(
        "streams_app: {} Streams thread error(s) (each thread replaced): {errors:?}",
        errors.len()
    );
    driver.wait_success(&mut cluster);
    eprintln!(
        "streams_app: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    cluster.stop();
}

/// The driver's sum of the latest output counts now (`COUNTS <tag>`), or the rest of its
/// `RESULT` line when that came first (the answer's wait reads past it).
fn counts(driver: &mut LineChild, cluster: &mut Cluster, tag: &str) -> Result<u64, String> {
    let answer = driver.command(cluster, &format!("COUNTS {tag}"));
    if let Some(result) = driver
        .out()
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
    {
        return Err(result.to_string());
    }
    match answer.split_whitespace().last().map(str::parse) {
        Some(Ok(n)) => Ok(n),
        _ => driver.fail(cluster, &format!("bad COUNTS answer: {answer}")),
    }
}

/// `counts`, where a RESULT is a failure: the input was all counted before `moment`.
fn counts_before_result(
    driver: &mut LineChild,
    cluster: &mut Cluster,
    tag: &str,
    moment: &str,
) -> u64 {
    match counts(driver, cluster, tag) {
        Ok(n) => n,
        Err(result) => driver.fail(cluster, &format!("RESULT {result} before {moment}")),
    }
}

/// Starts the Streams app in its own JVM with the fresh state dir `<cluster dir>/<dir>` and
/// waits until it runs.
fn start_app(stack: &JavaStack, cluster: &mut Cluster, guarantee: &str, dir: &str) -> LineChild {
    let state_dir = cluster.dir().join(dir);
    assert!(!state_dir.exists(), "{} is not fresh", state_dir.display());
    let mut command = stack.java("io.sluice.reftest.StreamsJoin");
    command
        .arg("app")
        .arg(cluster.bootstrap())
        .args([PREFIX, guarantee])
        .arg(Path::new(&state_dir));
    let mut app = LineChild::spawn("StreamsJoin app", &mut command, |_| String::new());
    app.expect(cluster, "STATE", "-> RUNNING");
    app
}

/// Waits for a `RESTORED <store> <partition> <records>` line of every partition of `store`:
/// records restored per partition.
fn wait_restored(app: &mut LineChild, cluster: &mut Cluster, store: &str) -> BTreeMap<i32, u64> {
    let prefix = format!("RESTORED {store} ");
    let mut restored = BTreeMap::new();
    // Lines already read while waiting for RUNNING.
    for line in app.out().lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let (partition, records) = parse_restored(rest);
            restored.insert(partition, records);
        }
    }
    while restored.len() < PARTITIONS as usize {
        let (partition, records) = parse_restored(&app.expect(cluster, &prefix, ""));
        restored.insert(partition, records);
    }
    restored
}

fn parse_restored(rest: &str) -> (i32, u64) {
    let mut words = rest.split_whitespace().map(|w| w.parse::<u64>());
    match (words.next(), words.next()) {
        (Some(Ok(partition)), Some(Ok(records))) => (partition as i32, records),
        _ => panic!("bad RESTORED line: {rest}"),
    }
}

/// The partition count of `topic` as some node's Metadata answers it.
fn partition_count(cluster: &Cluster, topic: &str) -> i32 {
    let mut count = 0;
    cluster.wait_until(&format!("{topic} exists"), WAIT_TIMEOUT, |c| {
        let mut last = String::new();
        for node in c.node_ids() {
            match c.try_metadata(node, Some(&[topic])) {
                Ok(md) => match md.topics.first() {
                    Some(t) if t.error_code == 0 && !t.partitions.is_empty() => {
                        count = t.partitions.len() as i32;
                        return Ok(());
                    }
                    Some(t) => last = format!("node {node}: {topic} error {}", t.error_code),
                    None => last = format!("node {node}: no {topic}"),
                },
                Err(e) => last = format!("node {node}: {e}"),
            }
        }
        Err(last)
    });
    count
}

/// `cleanup.policy` of `topic` (DescribeConfigs v4 to the first node that answers).
fn cleanup_policy(cluster: &Cluster, topic: &str) -> String {
    const TOPIC_RESOURCE: i8 = 2;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(str_bytes(topic))
            .with_configuration_keys(Some(vec![str_bytes("cleanup.policy")])),
    ]);
    let mut policy = String::new();
    cluster.wait_until(&format!("{topic}: cleanup.policy"), WAIT_TIMEOUT, |c| {
        let mut last = String::new();
        for node in c.node_ids() {
            let resp: DescribeConfigsResponse =
                match c.try_call(node, ApiKey::DescribeConfigs, 4, &req) {
                    Ok(resp) => resp,
                    Err(e) => {
                        last = format!("node {node}: {e}");
                        continue;
                    }
                };
            let value = resp.results.first().and_then(|r| {
                (r.error_code == 0)
                    .then(|| {
                        r.configs
                            .iter()
                            .find(|c| c.name.as_str() == "cleanup.policy")
                    })
                    .flatten()
                    .and_then(|c| c.value.as_ref())
            });
            match value {
                Some(v) => {
                    policy = v.to_string();
                    return Ok(());
                }
                None => last = format!("node {node}: {:?}", resp.results.first()),
            }
        }
        Err(last)
    });
    policy
}

/// (log start offset, end offset) of every partition of `topic`: ListOffsets (v7) earliest
/// and latest from its leader.
fn start_and_end_offsets(cluster: &Cluster, topic: &str) -> Result<Vec<(i64, i64)>, String> {
    (0..PARTITIONS)
        .map(|partition| {
            let leader = cluster.try_leader_of(topic, partition)?;
            let mut answer = [0i64; 2];
            for (i, timestamp) in [-2i64, -1].into_iter().enumerate() {
                let req = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![
                        ListOffsetsTopic::default()
                            .with_name(name(topic))
                            .with_partitions(vec![
                                ListOffsetsPartition::default()
                                    .with_partition_index(partition)
                                    .with_timestamp(timestamp),
                            ]),
                    ]);
                let resp: ListOffsetsResponse =
                    cluster.try_call(leader, ApiKey::ListOffsets, 7, &req)?;
                let p = resp
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .ok_or_else(|| format!("{topic}-{partition}: empty ListOffsets answer"))?;
                if p.error_code != 0 {
                    return Err(format!(
                        "{topic}-{partition} on node {leader}: ListOffsets error {}",
                        p.error_code
                    ));
                }
                answer[i] = p.offset;
            }
            Ok((answer[0], answer[1]))
        })
        .collect()
}
