//! `roles`, `kafka`, `ingester` and `querier`: which parts of Spoor a process runs, and where
//! the shared log and the other processes are (docs/scale-out.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::tls::ClientTlsConfig;

/// What a process does. All four together (the default) is the single node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the receivers and writes accepted spans to the log (or the WAL).
    Distributor,
    /// Owns log partitions: live traces, blocks.
    Ingester,
    /// Answers the query API from the blocks and the ingesters' live traces.
    Querier,
    /// Compaction, tiers and retention over the shared bucket.
    Compactor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Distributor, Role::Ingester, Role::Querier, Role::Compactor];

    /// Parses `distributor,ingester` (the `--roles` flag); `all` is every role.
    pub fn parse_list(s: &str) -> Result<Vec<Role>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => out.extend(Role::ALL),
                "distributor" => out.push(Role::Distributor),
                "ingester" => out.push(Role::Ingester),
                "querier" => out.push(Role::Querier),
                "compactor" => out.push(Role::Compactor),
                other => {
                    return Err(format!(
                        "unknown role {other:?}: expected distributor, ingester, querier, compactor or all"
                    ));
                }
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err("no role given".into());
        }
        Ok(out)
    }
}

/// The Kafka-API log. Absent: the single node's WAL.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Partitions of the topic; created with this many when it does not exist. Traces are spread
    /// by trace ID, so this bounds how many ingesters can share the work.
    pub partitions: u32,
    /// Replication factor when the topic is created (what survives a broker's loss).
    pub replication_factor: u16,
    /// How long a distributor gathers records for one partition before producing them.
    pub linger_ms: u64,
    /// Records are cut below this (brokers refuse messages over `message.max.bytes`, 1 MB by
    /// default); a larger single trace fragment goes alone.
    pub max_record_bytes: usize,
    /// zstd or none.
    pub compression: Compression,
    /// TLS to the brokers; off unless a key is set.
    pub tls: ClientTlsConfig,
    pub sasl: Option<SaslConfig>,
    /// How long start-up waits for the brokers before it gives up.
    pub connect_timeout_secs: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            topic: "spoor-spans".into(),
            partitions: 12,
            replication_factor: 1,
            linger_ms: 2,
            max_record_bytes: 900_000,
            compression: Compression::Zstd,
            tls: ClientTlsConfig::default(),
            sasl: None,
            connect_timeout_secs: 60,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Zstd,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub username: String,
    /// A file holding the password (so it is not in the config).
    pub password_file: PathBuf,
}

/// Which partitions an ingester owns: `partitions` when listed, else every partition `p` with
/// `p % replicas == ordinal`. Without `ordinal`, the hostname's trailing `-N` (a StatefulSet
/// pod `spoor-ingester-2` is ordinal 2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterConfig {
    pub ordinal: Option<u32>,
    pub replicas: u32,
    pub partitions: Vec<u32>,
    /// How often the offsets below which every record is in a block are written to the bucket.
    pub checkpoint_interval_secs: u64,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        IngesterConfig { ordinal: None, replicas: 1, partitions: Vec::new(), checkpoint_interval_secs: 5 }
    }
}

impl IngesterConfig {
    /// The partitions this process reads, of `total`.
    pub fn owned(&self, total: u32, hostname: &str) -> Result<Vec<u32>, String> {
        if !self.partitions.is_empty() {
            if let Some(p) = self.partitions.iter().find(|p| **p >= total) {
                return Err(format!("ingester.partitions names {p}, but kafka.partitions is {total}"));
            }
            let mut v = self.partitions.clone();
            v.sort_unstable();
            v.dedup();
            return Ok(v);
        }
        if self.replicas == 0 {
            return Err("ingester.replicas must be at least 1".into());
        }
        let ordinal = match self.ordinal {
            Some(o) => o,
            None if self.replicas == 1 => 0,
            None => ordinal_of(hostname)
                .ok_or_else(|| format!("ingester.ordinal is unset and the hostname {hostname:?} does not end in -N"))?,
        };
        if ordinal >= self.replicas {
            return Err(format!("ingester.ordinal {ordinal} is not below ingester.replicas {}", self.replicas));
        }
        Ok((0..total).filter(|p| p % self.replicas == ordinal).collect())
    }
}

/// `spoor-ingester-2` -> 2.
fn ordinal_of(hostname: &str) -> Option<u32> {
    let (_, n) = hostname.rsplit_once('-')?;
    n.parse().ok()
}

/// Where a querier finds the live traces: the ingesters' API URLs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuerierConfig {
    pub ingesters: Vec<String>,
    /// How long a query waits for an ingester; one that does not answer in time is left out and
    /// the answer is marked partial.
    pub ingester_timeout_ms: u64,
    /// A token file (a `read` token) for ingesters whose API port checks tokens.
    pub token_file: PathBuf,
    /// TLS to ingesters served over https://.
    pub tls: ClientTlsConfig,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        QuerierConfig {
            ingesters: Vec::new(),
            ingester_timeout_ms: 1000,
            token_file: PathBuf::new(),
            tls: ClientTlsConfig::default(),
        }
    }
}

/// The roles and the log together make sense: split roles need the log to meet.
pub fn validate(roles: &[Role], kafka: Option<&KafkaConfig>) -> Result<(), String> {
    if roles.is_empty() {
        return Err("roles: no role given".into());
    }
    let has = |r| roles.contains(&r);
    match kafka {
        None if (has(Role::Distributor) || has(Role::Ingester)) && !(has(Role::Distributor) && has(Role::Ingester)) => {
            Err("roles: a distributor without an ingester (or the reverse) needs kafka.brokers, the log between them"
                .into())
        }
        None => Ok(()),
        Some(k) => {
            if k.brokers.is_empty() {
                return Err("kafka.brokers: at least one broker".into());
            }
            if k.partitions == 0 || k.partitions > 10_000 {
                return Err("kafka.partitions: between 1 and 10000".into());
            }
            if k.topic.is_empty() {
                return Err("kafka.topic: empty".into());
            }
            if let Some(s) = &k.sasl
                && !matches!(s.mechanism.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")
            {
                return Err(format!(
                    "kafka.sasl.mechanism {:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    s.mechanism
                ));
            }
            k.tls.validate().map_err(|e| format!("kafka.{e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_refuse_unknown_names() {
        assert_eq!(Role::parse_list("querier, distributor").unwrap(), vec![Role::Distributor, Role::Querier]);
        assert_eq!(Role::parse_list("all").unwrap(), Role::ALL.to_vec());
        assert!(Role::parse_list("ingestor").unwrap_err().contains("ingestor"));
        assert!(Role::parse_list("").is_err());
    }

    #[test]
    fn partitions_follow_the_ordinal_or_the_hostname() {
        let c = IngesterConfig { replicas: 3, ..Default::default() };
        assert_eq!(c.owned(7, "spoor-ingester-1").unwrap(), vec![1, 4]);
        assert!(c.owned(7, "spoor").is_err());
        let c = IngesterConfig { ordinal: Some(2), replicas: 3, ..Default::default() };
        assert_eq!(c.owned(7, "x").unwrap(), vec![2, 5]);
        let c = IngesterConfig { partitions: vec![3, 1, 3], ..Default::default() };
        assert_eq!(c.owned(4, "x").unwrap(), vec![1, 3]);
        assert!(c.owned(2, "x").is_err());
        assert_eq!(IngesterConfig::default().owned(2, "x").unwrap(), vec![0, 1]);
    }

    #[test]
    fn split_roles_need_the_log() {
        let k = KafkaConfig { brokers: vec!["b:9092".into()], ..Default::default() };
        assert!(validate(&[Role::Distributor], None).is_err());
        assert!(validate(&[Role::Distributor], Some(&k)).is_ok());
        assert!(validate(&Role::ALL, None).is_ok());
        assert!(validate(&[Role::Querier, Role::Compactor], None).is_ok());
        assert!(validate(&[Role::Ingester], Some(&KafkaConfig::default())).is_err());
    }
}
