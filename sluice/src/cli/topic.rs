//! `sluice topic create|list|describe|delete|alter-config`.

use anyhow::{Context, Result, bail};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};

use super::client::{Client, check_msg};
use super::{Bootstrap, metadata, parse_key_value, str_bytes, topic_name};

/// Kafka's ConfigResource type for topics.
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// How long the broker may take to create or delete topics.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (-1: the broker's default).
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// Replicas per partition (-1: the broker's default).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// Topic config KEY=VALUE with Kafka's names (retention.ms=...); repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics, one name per line.
    List,
    /// Partitions (leader, replicas, ISR) and configs of a topic; with --http-addr (a
    /// broker's `[http] addr`) also where its log cleaner stands on that broker's replicas.
    Describe {
        name: String,
        #[arg(long)]
        http_addr: Option<String>,
    },
    /// Delete a topic.
    Delete { name: String },
    /// Set or remove topic configs.
    AlterConfig {
        name: String,
        /// KEY=VALUE to set; repeatable.
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// KEY to reset to the broker default; repeatable.
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
}

pub fn run(args: TopicArgs) -> Result<()> {
    let mut client = Client::bootstrap(&args.bootstrap.bootstrap)?;
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => create(&mut client, &name, partitions, replication_factor, &configs),
        TopicCommand::List => list(&mut client),
        TopicCommand::Describe { name, http_addr } => {
            describe(&mut client, &name)?;
            match http_addr {
                Some(addr) => describe_cleaner(&addr, &name),
                None => Ok(()),
            }
        }
        TopicCommand::Delete { name } => delete(&mut client, &name),
        TopicCommand::AlterConfig { name, set, delete } => {
            alter_config(&mut client, &name, &set, &delete)
        }
    }
}

fn create(
    client: &mut Client,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<()> {
    let topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let (response, _) = client.call(&request)?;
    let result = response
        .topics
        .first()
        .context("CreateTopics answered no topic")?;
    check_msg(
        result.error_code,
        result.error_message.as_deref(),
        &format!("creating topic {name:?}"),
    )?;
    println!("created topic {name}");
    Ok(())
}

fn list(client: &mut Client) -> Result<()> {
    let response = metadata::fetch(client, None)?;
    let mut names: Vec<String> = response
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

fn describe(client: &mut Client, name: &str) -> Result<()> {
    let (partitions, _) = metadata::partitions(client, name)?;
    println!("topic: {name}  partitions: {}", partitions.len());
    println!(
        "{:>9}  {:>6}  {:>12}  {:<16}  {:<16}",
        "PARTITION", "LEADER", "LEADER_EPOCH", "REPLICAS", "ISR"
    );
    for p in &partitions {
        println!(
            "{:>9}  {:>6}  {:>12}  {:<16}  {:<16}{}",
            p.partition,
            p.leader,
            p.leader_epoch,
            join(&p.replicas),
            join(&p.isr),
            if p.error_code != 0 {
                format!("  {}", super::client::error_name(p.error_code))
            } else {
                String::new()
            }
        );
    }
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configuration_keys(None),
    ]);
    let (response, _) = client.call(&request)?;
    let result = response
        .results
        .first()
        .context("DescribeConfigs answered no resource")?;
    check_msg(
        result.error_code,
        result.error_message.as_deref(),
        &format!("describing configs of {name:?}"),
    )?;
    println!("configs:");
    let mut configs: Vec<_> = result.configs.iter().collect();
    configs.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    for c in configs {
        let value = if c.is_sensitive {
            "(sensitive)".to_string()
        } else {
            c.value.as_deref().unwrap_or("(null)").to_string()
        };
        println!(
            "  {}={}  ({})",
            c.name.as_str(),
            value,
            source_name(c.config_source)
        );
    }
    Ok(())
}

fn delete(client: &mut Client, name: &str) -> Result<()> {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name(name)])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let (response, _) = client.call(&request)?;
    let result = response
        .responses
        .first()
        .context("DeleteTopics answered no topic")?;
    check_msg(
        result.error_code,
        result.error_message.as_deref(),
        &format!("deleting topic {name:?}"),
    )?;
    println!("deleted topic {name}");
    Ok(())
}

fn alter_config(
    client: &mut Client,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<()> {
    if set.is_empty() && delete.is_empty() {
        bail!("nothing to change: give --set KEY=VALUE and/or --delete KEY");
    }
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(OP_SET)
                .with_value(Some(str_bytes(v)))
        })
        .collect();
    configs.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(str_bytes(k))
            .with_config_operation(OP_DELETE)
            .with_value(None)
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configs(configs),
    ]);
    let (response, _) = client.call(&request)?;
    let result = response
        .responses
        .first()
        .context("IncrementalAlterConfigs answered no resource")?;
    check_msg(
        result.error_code,
        result.error_message.as_deref(),
        &format!("altering configs of {name:?}"),
    )?;
    println!("altered configs of topic {name}");
    Ok(())
}

fn join(ids: &[i32]) -> String {
    let parts: Vec<String> = ids.iter().map(i32::to_string).collect();
    parts.join(",")
}

/// Kafka's DescribeConfigs `config_source` names.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "dynamic topic config",
        2 => "dynamic broker config",
        3 => "dynamic default broker config",
        4 => "static broker config",
        5 => "default",
        6 => "dynamic broker logger config",
        _ => "unknown",
    }
}

/// The `/v1/cleaner` rows of `topic` from the broker's HTTP listener at `addr`.
fn describe_cleaner(addr: &str, topic: &str) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)
        .with_context(|| format!("connecting to the broker's HTTP listener {addr}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /v1/cleaner HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("HTTP response without a body")?;
    let json: serde_json::Value = serde_json::from_str(body).context("parsing /v1/cleaner")?;
    println!("cleaner (replicas on {addr}):");
    println!(
        "{:>9}  {:>11}  {:>11}  {:>14}  {:>12}  {:>12}  {:>11}",
        "PARTITION",
        "LOG_START",
        "FIRST_DIRTY",
        "UNCLEANABLE_AT",
        "CLEAN_BYTES",
        "DIRTY_BYTES",
        "DIRTY_RATIO"
    );
    let rows = json["partitions"].as_array().cloned().unwrap_or_default();
    for r in rows.iter().filter(|r| r["topic"] == topic) {
        println!(
            "{:>9}  {:>11}  {:>11}  {:>14}  {:>12}  {:>12}  {:>11.3}",
            r["partition"].as_i64().unwrap_or(-1),
            r["log_start_offset"].as_i64().unwrap_or(-1),
            r["first_dirty_offset"].as_i64().unwrap_or(-1),
            r["first_uncleanable_offset"].as_i64().unwrap_or(-1),
            r["clean_bytes"].as_u64().unwrap_or(0),
            r["dirty_bytes"].as_u64().unwrap_or(0),
            r["dirty_ratio"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
