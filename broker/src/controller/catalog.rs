//! `<data_dir>/catalog.json`: this node's cluster id (until the first registration applied
//! names the cluster), its next producer-id block (`producer_ids`), and, in a data dir written
//! before the metadata quorum existed, the topics a new quorum of one takes over once
//! (`thread.rs`). Topics are not kept here any more: the metadata quorum is their authority.
//!
//! Read once at start-up by the server; then owned by the frontend on shard 0, which writes it
//! only to persist a producer-id block. Replaced atomically: write `catalog.json.tmp`,
//! fdatasync, rename, fsync the directory, so a crash leaves either the old or the new file.
//! Back-of-envelope: ~100 bytes without topics, one write per 1000 producer ids.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::{ClusterMetadata, TopicMeta};

pub const CATALOG_FILE: &str = "catalog.json";
/// Producer ids are handed out in blocks; a block is persisted before any id in it is used.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct CatalogFile {
    format_version: u32,
    cluster_id: String,
    revision: u64,
    /// First producer id not yet handed out in any block.
    producer_id_next_block: i64,
    topics: Vec<TopicRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    #[serde(default)]
    leader_epoch: i32,
}

/// The catalog in memory plus its file.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    pub cluster_id: String,
    pub revision: u64,
    pub producer_id_next_block: i64,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl Catalog {
    /// Loads `<data_dir>/catalog.json`, or starts an empty one (persisted at once, so the
    /// cluster id is stable from the first start).
    pub fn open(data_dir: &Path) -> Result<Catalog, CatalogError> {
        let path = data_dir.join(CATALOG_FILE);
        let io = |source| CatalogError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(|source| CatalogError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        match std::fs::read(&path) {
            Ok(bytes) => Self::decode(path.clone(), &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let catalog = Catalog {
                    path: path.clone(),
                    cluster_id: format!("sluice-{}", crate::metadata::new_topic_id().simple()),
                    revision: 0,
                    producer_id_next_block: 0,
                    topics: BTreeMap::new(),
                };
                catalog.save()?;
                Ok(catalog)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn decode(path: PathBuf, bytes: &[u8]) -> Result<Catalog, CatalogError> {
        let corrupt = |message: String| CatalogError::Corrupt {
            path: path.clone(),
            message,
        };
        let file: CatalogFile =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.format_version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "unknown format_version {}",
                file.format_version
            )));
        }
        let mut topics = BTreeMap::new();
        for t in file.topics {
            let id =
                Uuid::parse_str(&t.id).map_err(|e| corrupt(format!("topic {}: {e}", t.name)))?;
            if t.partitions < 1 || !crate::metadata::valid_topic_name(&t.name) {
                return Err(corrupt(format!("topic {} is invalid", t.name)));
            }
            topics.insert(
                t.name.clone(),
                TopicMeta {
                    name: t.name,
                    id,
                    partitions: t.partitions,
                    configs: t.configs,
                    leader_epoch: t.leader_epoch,
                    partition_states: Vec::new(),
                },
            );
        }
        Ok(Catalog {
            path,
            cluster_id: file.cluster_id,
            revision: file.revision,
            producer_id_next_block: file.producer_id_next_block,
            topics,
        })
    }

    /// Writes the catalog atomically.
    pub fn save(&self) -> Result<(), CatalogError> {
        let file = CatalogFile {
            format_version: FORMAT_VERSION,
            cluster_id: self.cluster_id.clone(),
            revision: self.revision,
            producer_id_next_block: self.producer_id_next_block,
            topics: self
                .topics
                .values()
                .map(|t| TopicRecord {
                    name: t.name.clone(),
                    id: t.id.hyphenated().to_string(),
                    partitions: t.partitions,
                    configs: t.configs.clone(),
                    leader_epoch: t.leader_epoch,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| CatalogError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&self.path, &bytes).map_err(|source| CatalogError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The snapshot shards serve from.
    pub fn snapshot(&self) -> ClusterMetadata {
        ClusterMetadata::new(
            self.cluster_id.clone(),
            self.revision,
            self.topics.values().cloned(),
        )
    }

    /// Reserves the next block of producer ids, persisted before use. Returns its range.
    pub fn take_producer_id_block(&mut self) -> Result<std::ops::Range<i64>, CatalogError> {
        let start = self.producer_id_next_block;
        self.producer_id_next_block = start + PRODUCER_ID_BLOCK;
        if let Err(e) = self.save() {
            self.producer_id_next_block = start;
            return Err(e);
        }
        Ok(start..start + PRODUCER_ID_BLOCK)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let id = crate::metadata::new_topic_id();
        c.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id,
                partitions: 3,
                configs: BTreeMap::new(),
                leader_epoch: 0,
                partition_states: Vec::new(),
            },
        );
        c.revision += 1;
        c.save().unwrap();
        let block = c.take_producer_id_block().unwrap();
        let c2 = Catalog::open(dir.path()).unwrap();
        assert_eq!(c2.cluster_id, c.cluster_id);
        assert_eq!(c2.topics["t"].id, id);
        assert_eq!(c2.topics["t"].partitions, 3);
        assert_eq!(c2.producer_id_next_block, block.end);
    }
}
