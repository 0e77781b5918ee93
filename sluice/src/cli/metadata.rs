//! Metadata look-ups shared by the commands: topic layouts and leader connections.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use kafka_protocol::messages::{
    MetadataRequest, MetadataResponse, metadata_request::MetadataRequestTopic,
};

use super::client::{Client, error_name};
use super::topic_name;

/// One partition as Metadata describes it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// Metadata for `topics` (None = all topics); never auto-creates.
pub fn fetch(client: &mut Client, topics: Option<&[&str]>) -> Result<MetadataResponse> {
    let request = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    Ok(client.call(&request)?.0)
}

/// The partitions of `topic`, sorted; an error names the Kafka code if the topic is unknown.
pub fn partitions(
    client: &mut Client,
    topic: &str,
) -> Result<(Vec<PartitionInfo>, HashMap<i32, String>)> {
    let response = fetch(client, Some(&[topic]))?;
    let brokers = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    let t = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .ok_or_else(|| anyhow!("topic {topic:?} missing from the Metadata answer"))?;
    if t.error_code != 0 {
        bail!("topic {topic:?}: {}", error_name(t.error_code));
    }
    let mut parts: Vec<PartitionInfo> = t
        .partitions
        .iter()
        .map(|p| PartitionInfo {
            partition: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            error_code: p.error_code,
        })
        .collect();
    parts.sort_by_key(|p| p.partition);
    Ok((parts, brokers))
}

/// Connections to partition leaders, opened on first use.
pub struct Leaders {
    bootstrap: String,
    brokers: HashMap<i32, String>,
    clients: HashMap<i32, Client>,
}

impl Leaders {
    pub fn new(bootstrap: &str, brokers: HashMap<i32, String>) -> Leaders {
        Leaders {
            bootstrap: bootstrap.to_string(),
            brokers,
            clients: HashMap::new(),
        }
    }

    /// The connection to node `leader`.
    pub fn get(&mut self, leader: i32) -> Result<&mut Client> {
        if leader < 0 {
            bail!("partition has no leader (LEADER_NOT_AVAILABLE)");
        }
        if !self.clients.contains_key(&leader) {
            let addr = self
                .brokers
                .get(&leader)
                .cloned()
                .unwrap_or_else(|| self.bootstrap.clone());
            let client = Client::bootstrap(&addr)
                .with_context(|| format!("connecting to leader {leader} at {addr}"))?;
            self.clients.insert(leader, client);
        }
        Ok(self.clients.get_mut(&leader).expect("inserted above"))
    }
}
