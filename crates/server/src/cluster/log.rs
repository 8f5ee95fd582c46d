//! The Kafka-API log: one topic, partitioned by trace ID. A distributor appends a request's
//! fragments (in the WAL's record layout, one record per partition it touches) and acknowledges
//! once every partition's broker has (`acks=all`, rskafka's only mode); an ingester fetches its
//! partitions from an offset.

use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use spoor_model::{Fragment, TraceId, encode_record};

use crate::cluster::config::{Compression, KafkaConfig};
use crate::error::{Error, StartupError};

pub struct Log {
    client: Client,
    config: KafkaConfig,
    /// One batching producer per partition (records of concurrent requests share a produce).
    producers: Vec<BatchProducer<RecordAggregator>>,
}

/// The partition of a trace: its ID's last eight bytes (random) modulo the partition count.
pub fn partition_of(id: &TraceId, partitions: u32) -> u32 {
    let tail: [u8; 8] = id.0[8..].try_into().expect("16-byte ID");
    (u64::from_be_bytes(tail) % partitions as u64) as u32
}

impl Log {
    /// Connects to the brokers and makes sure the topic exists, retrying until
    /// `kafka.connect_timeout_secs` (brokers often start after us). `producing`: this process
    /// appends (a distributor).
    pub async fn connect(config: &KafkaConfig, producing: bool) -> Result<Log, StartupError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(config.connect_timeout_secs.max(1));
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match Log::try_connect(config, producing).await {
                Ok(log) => {
                    tokio::spawn(async {
                        loop {
                            no_delay_sweep();
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    });
                    return Ok(log);
                }
                Err(e) => {
                    if e != last {
                        tracing::warn!(error = %e, brokers = ?config.brokers, "cannot reach the Kafka-API log yet; retrying");
                    }
                    last = e;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(StartupError::new(format!("kafka: cannot reach {:?}: {last}", config.brokers)))
    }

    async fn try_connect(config: &KafkaConfig, producing: bool) -> Result<Log, String> {
        // Bounded retries: a request must not wait forever on a broker that is gone; the client
        // gets 503 and retries itself.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(Duration::from_secs(10)),
        };
        let mut builder = ClientBuilder::new(config.brokers.clone()).client_id("spoor").backoff_config(backoff);
        if config.tls.is_set() {
            builder = builder.tls_config(Arc::new(crate::tls::client::client_config(&config.tls)?));
        }
        if let Some(s) = &config.sasl {
            let password = std::fs::read_to_string(&s.password_file)
                .map_err(|e| format!("kafka.sasl.password_file {}: {e}", s.password_file.display()))?;
            let c = Credentials::new(s.username.clone(), password.trim_end().to_owned());
            builder = builder.sasl_config(match s.mechanism.as_str() {
                "SCRAM-SHA-256" => SaslConfig::ScramSha256(c),
                "SCRAM-SHA-512" => SaslConfig::ScramSha512(c),
                _ => SaslConfig::Plain(c),
            });
        }
        let client = builder.build().await.map_err(|e| e.to_string())?;
        let topics = client.list_topics().await.map_err(|e| e.to_string())?;
        match topics.iter().find(|t| t.name == config.topic) {
            Some(t) if t.partitions.len() as u32 != config.partitions => {
                return Err(format!(
                    "topic {} has {} partitions but kafka.partitions is {}: traces would be spread differently",
                    config.topic,
                    t.partitions.len(),
                    config.partitions
                ));
            }
            Some(_) => {}
            None => {
                let controller = client.controller_client().map_err(|e| e.to_string())?;
                let created = controller
                    .create_topic(&config.topic, config.partitions as i32, config.replication_factor as i16, 10_000)
                    .await;
                // Another process may have created it meanwhile: the next attempt checks it.
                if let Err(e) = created {
                    return Err(format!("creating topic {}: {e}", config.topic));
                }
                tracing::info!(topic = config.topic, partitions = config.partitions, "Kafka topic created");
            }
        }
        let mut producers = Vec::new();
        if producing {
            let compression = match config.compression {
                Compression::None => rskafka::client::partition::Compression::NoCompression,
                Compression::Zstd => rskafka::client::partition::Compression::Zstd,
            };
            for p in 0..config.partitions {
                let pc = client
                    .partition_client(config.topic.clone(), p as i32, UnknownTopicHandling::Retry)
                    .await
                    .map_err(|e| format!("partition {p}: {e}"))?;
                let producer = BatchProducerBuilder::new(Arc::new(pc))
                    .with_linger(Duration::from_millis(config.linger_ms))
                    .with_compression(compression)
                    .build(RecordAggregator::new(config.max_record_bytes.max(1 << 16) * 2));
                producers.push(producer);
            }
        }
        Ok(Log { client, config: config.clone(), producers })
    }

    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// A reader of one partition.
    pub async fn partition(&self, p: u32) -> Result<PartitionClient, String> {
        self.client
            .partition_client(self.config.topic.clone(), p as i32, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| e.to_string())
    }

    /// Appends a request's fragments: grouped by partition, cut into records under
    /// `max_record_bytes`, produced concurrently. Ok once every record is acknowledged by its
    /// partition's replicas; an error means the client must retry (some records may be in
    /// the log already: reads drop the duplicate spans).
    pub async fn append(&self, tenant: &str, fragments: &[Fragment]) -> Result<(), Error> {
        let n = self.config.partitions;
        let mut by_partition: Vec<Vec<Fragment>> = vec![Vec::new(); n as usize];
        for f in fragments {
            by_partition[partition_of(&f.trace_id, n) as usize].push(f.clone());
        }
        let mut sends = Vec::new();
        for (p, frags) in by_partition.into_iter().enumerate() {
            for chunk in chunks(&frags, self.config.max_record_bytes) {
                let record = Record {
                    key: None,
                    value: Some(encode_record(tenant, chunk)),
                    headers: Default::default(),
                    timestamp: rskafka::chrono::Utc::now(),
                };
                sends.push(self.producers[p].produce(record));
            }
        }
        for r in futures_util::future::join_all(sends).await {
            r.map_err(|e| {
                Error::unavailable(format!("cannot append to the Kafka-API log: {e}; retry later"), 1).with_source(e)
            })?;
        }
        Ok(())
    }

    /// The earliest offset still in a partition (retention moves it).
    pub async fn earliest(pc: &PartitionClient) -> Result<i64, String> {
        pc.get_offset(OffsetAt::Earliest).await.map_err(|e| e.to_string())
    }
}

/// Turns Nagle's algorithm off on every TCP socket of this process. rskafka opens its broker
/// connections without `TCP_NODELAY` and writes a request's 4-byte length and its body
/// separately, so with requests in flight the kernel held each length back until the broker's
/// delayed ACK: a flat 40-50 ms on every acknowledgement (measured with scripts/bench-cluster).
/// It offers no hook into its sockets, so they are found here, once a second (reconnects open new
/// ones). Every other socket of the process is an HTTP or gRPC one, where no delay is wanted too.
fn no_delay_sweep() {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return };
    for entry in fds.flatten() {
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<libc::c_int>().ok()) else { continue };
        if !is_socket {
            continue;
        }
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let one: libc::c_int = 1;
        // SAFETY: plain socket option calls on an fd number with correctly sized buffers; a
        // closed or reused fd makes them fail (EBADF, ENOTSOCK), which is ignored.
        unsafe {
            if libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut kind).cast(), &mut len) != 0
                || kind != libc::SOCK_STREAM
            {
                continue;
            }
            let mut nodelay: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&raw mut nodelay).cast(), &mut len) == 0
                && nodelay == 0
            {
                let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&raw const one).cast(), size);
            }
        }
    }
}

/// Consecutive runs of fragments whose encoded size stays under `max` (a single larger
/// fragment makes a run of its own).
fn chunks(frags: &[Fragment], max: usize) -> Vec<&[Fragment]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, f) in frags.iter().enumerate() {
        let add = f.bytes.len() + 24;
        if i > start && size + add > max {
            out.push(&frags[start..i]);
            (start, size) = (i, 0);
        }
        size += add;
    }
    if start < frags.len() {
        out.push(&frags[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(last: u8, len: usize) -> Fragment {
        let mut id = [1u8; 16];
        id[15] = last;
        Fragment { trace_id: TraceId(id), spans: 1, bytes: bytes::Bytes::from(vec![0u8; len]) }
    }

    #[test]
    fn partitions_spread_by_the_id_and_stay_in_range() {
        let mut seen = std::collections::BTreeSet::new();
        for b in 0..=255u8 {
            let p = partition_of(&frag(b, 1).trace_id, 6);
            assert!(p < 6);
            seen.insert(p);
        }
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn records_are_cut_under_the_limit() {
        let f: Vec<Fragment> = (0..5).map(|i| frag(i, 100)).collect();
        let c = chunks(&f, 250);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        let big = vec![frag(0, 1000), frag(1, 10)];
        assert_eq!(chunks(&big, 250).len(), 2);
        assert!(chunks(&[], 250).is_empty());
    }
}
