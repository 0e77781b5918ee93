//! `sluice group list|describe|delete`, and the group calls `consume --group` shares.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest,
};

use super::client::{Client, check, check_msg};
use super::membership::Member;
use super::metadata::{self, Leaders};
use super::offsets::{self, LATEST};
use super::{Bootstrap, str_bytes, topic_name};

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups (on every broker of the cluster).
    List,
    /// State, members, and per partition the committed offset, log end offset and lag.
    Describe { group: String },
    /// Delete a group (it must have no members).
    Delete { group: String },
}

pub fn run(args: GroupArgs) -> Result<()> {
    let bootstrap = &args.bootstrap.bootstrap;
    match args.command {
        GroupCommand::List => list(bootstrap),
        GroupCommand::Describe { group } => describe(bootstrap, &group),
        GroupCommand::Delete { group } => delete(bootstrap, &group),
    }
}

/// A connection to `group`'s coordinator.
pub fn coordinator(bootstrap: &str, group: &str) -> Result<Client> {
    let mut client = Client::bootstrap(bootstrap)?;
    let request = FindCoordinatorRequest::default()
        .with_key(str_bytes(group))
        .with_key_type(0);
    let (response, _) = client.call(&request)?;
    check_msg(
        response.error_code,
        response.error_message.as_deref(),
        &format!("finding the coordinator of group {group:?}"),
    )?;
    let addr = format!("{}:{}", response.host, response.port);
    if addr == client.addr() {
        return Ok(client);
    }
    Client::connect(&addr).with_context(|| format!("connecting to coordinator {addr}"))
}

/// Committed offsets of `group`: (topic, partition) -> offset. `topic` None = every topic.
pub fn committed(
    coordinator: &mut Client,
    group: &str,
    topic: Option<(&str, &[i32])>,
) -> Result<BTreeMap<(String, i32), i64>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_topics(topic.map(|(t, partitions)| {
            vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(t))
                    .with_partition_indexes(partitions.to_vec()),
            ]
        }));
    let (response, _) = coordinator.call(&request)?;
    check(
        response.error_code,
        &format!("fetching offsets of group {group:?}"),
    )?;
    let mut out = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            check(
                p.error_code,
                &format!("offset of {}-{}", t.name.0, p.partition_index),
            )?;
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` (partition -> next offset to read) for `group` as `member` of its
/// current generation.
pub fn commit(
    coordinator: &mut Client,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
    member: &Member,
) -> Result<()> {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id_or_member_epoch(member.generation_id)
        .with_member_id(member.member_id.clone())
        .with_retention_time_ms(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|&(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                ),
        ]);
    let (response, _) = coordinator.call(&request)?;
    for t in &response.topics {
        for p in &t.partitions {
            check(
                p.error_code,
                &format!(
                    "committing {}-{} for group {group:?}",
                    t.name.0, p.partition_index
                ),
            )?;
        }
    }
    Ok(())
}

fn list(bootstrap: &str) -> Result<()> {
    let mut client = Client::bootstrap(bootstrap)?;
    let brokers: Vec<String> = metadata::fetch(&mut client, Some(&[]))?
        .brokers
        .iter()
        .map(|b| format!("{}:{}", b.host, b.port))
        .collect();
    let mut groups = BTreeMap::new();
    for addr in brokers {
        let mut c = if addr == client.addr() {
            None
        } else {
            Some(Client::connect(&addr)?)
        };
        let c = c.as_mut().unwrap_or(&mut client);
        let (response, _) = c.call(&ListGroupsRequest::default())?;
        check(response.error_code, &format!("listing groups on {addr}"))?;
        for g in response.groups {
            groups.insert(
                g.group_id.0.to_string(),
                (g.protocol_type.to_string(), g.group_state.to_string()),
            );
        }
    }
    for (group, (protocol, state)) in groups {
        let state = if state.is_empty() {
            "-".to_string()
        } else {
            state
        };
        let protocol = if protocol.is_empty() {
            "-".to_string()
        } else {
            protocol
        };
        println!("{group}\t{state}\t{protocol}");
    }
    Ok(())
}

fn describe(bootstrap: &str, group: &str) -> Result<()> {
    let mut coordinator = coordinator(bootstrap, group)?;
    let (response, _) = coordinator
        .call(&DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]))?;
    let described = response
        .groups
        .first()
        .context("DescribeGroups answered no group")?;
    check_msg(
        described.error_code,
        described.error_message.as_deref(),
        &format!("describing group {group:?}"),
    )?;
    println!(
        "group: {group}  state: {}  protocol: {}  assignor: {}  members: {}",
        described.group_state.as_str(),
        dash(described.protocol_type.as_str()),
        dash(described.protocol_data.as_str()),
        described.members.len()
    );
    if !described.members.is_empty() {
        println!(
            "{:<40}  {:<20}  {:<20}  ASSIGNMENT",
            "MEMBER", "CLIENT_ID", "HOST"
        );
        for m in &described.members {
            let assignment = if described.protocol_type.as_str() == "consumer" {
                assignment_text(&m.member_assignment)
            } else {
                "-".to_string()
            };
            println!(
                "{:<40}  {:<20}  {:<20}  {}",
                m.member_id.as_str(),
                m.client_id.as_str(),
                m.client_host.as_str(),
                assignment
            );
        }
    }
    let committed = committed(&mut coordinator, group, None)?;
    println!(
        "{:<24}  {:>9}  {:>16}  {:>16}  {:>8}",
        "TOPIC", "PARTITION", "COMMITTED_OFFSET", "LOG_END_OFFSET", "LAG"
    );
    let mut client = Client::bootstrap(bootstrap)?;
    let topics: std::collections::BTreeSet<&String> = committed.keys().map(|(t, _)| t).collect();
    for topic in topics {
        let end = match metadata::partitions(&mut client, topic) {
            Ok((parts, brokers)) => {
                let mut leaders = Leaders::new(bootstrap, brokers);
                offsets::list(&mut leaders, topic, &parts, LATEST).ok()
            }
            Err(_) => None,
        };
        for ((t, partition), offset) in
            committed.range((topic.clone(), i32::MIN)..=(topic.clone(), i32::MAX))
        {
            let leo = end.as_ref().and_then(|e| e.get(partition).copied());
            let (leo_text, lag_text) = match leo {
                Some(leo) => (leo.to_string(), (leo - offset).max(0).to_string()),
                None => ("-".to_string(), "-".to_string()),
            };
            println!("{t:<24}  {partition:>9}  {offset:>16}  {leo_text:>16}  {lag_text:>8}");
        }
    }
    Ok(())
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `topic:0,1 other:3` from a classic consumer's assignment bytes (Kafka's
/// ConsumerProtocolAssignment: a version prefix, then the message); `?` if undecodable.
fn assignment_text(bytes: &bytes::Bytes) -> String {
    use bytes::Buf;
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return "-".to_string();
    }
    let version = buf.get_i16();
    let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) else {
        return "?".to_string();
    };
    let parts: Vec<String> = decoded
        .assigned_partitions
        .iter()
        .map(|tp| {
            let ps: Vec<String> = tp.partitions.iter().map(i32::to_string).collect();
            format!("{}:{}", tp.topic.0, ps.join(","))
        })
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

fn delete(bootstrap: &str, group: &str) -> Result<()> {
    let mut coordinator = coordinator(bootstrap, group)?;
    let (response, _) = coordinator
        .call(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes(group))]))?;
    let result = response
        .results
        .first()
        .context("DeleteGroups answered no group")?;
    check(result.error_code, &format!("deleting group {group:?}"))?;
    println!("deleted group {group}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn decodes_consumer_assignments() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(topic_name("orders"))
                .with_partitions(vec![0, 2]),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(1);
        assignment.encode(&mut buf, 1).unwrap();
        assert_eq!(assignment_text(&buf.freeze()), "orders:0,2");
        assert_eq!(assignment_text(&bytes::Bytes::new()), "-");
        assert_eq!(assignment_text(&bytes::Bytes::from_static(&[0, 1, 0])), "?");
    }
}
