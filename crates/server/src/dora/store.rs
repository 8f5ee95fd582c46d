//! The durable per-tenant store of DORA events: one append-only file per tenant,
//! `<data_dir>/dora/<tenant as hex>.log`, loaded into memory at start-up.
//!
//! A record is `[length: u32 LE][crc32 of payload: u32 LE][payload: JSON of one event]`.
//! Events are written and synced (with `wal.durability: fsync`) *before* the request's spans go
//! to the WAL, under the tenant's lock, so every acknowledged request's events are durable, and
//! a failure refuses the request (the client retries). Events are keyed by (kind, trace ID,
//! span ID): a retry, or a span sent twice, is stored once. Requests carry DORA events rarely
//! (a deployment, a pipeline's root span, an incident), so one sync per such request costs
//! little; requests without any write nothing.
//!
//! A torn tail (a crash mid-append) is cut off at start-up; expired events are dropped then and
//! hourly, by rewriting the file (a temporary file renamed over it).
//!
//! With encryption at rest (`storage.encryption.key_file`), a file starts with a sealed header
//! (its own data key, wrapped by the master key, so `spoor keys rotate` re-wraps it with the
//! WAL's files) and every payload is sealed on its own (`spoor_seal::seal_record`); the CRC
//! then covers the sealed bytes. Events name services, revisions and repositories: nothing of
//! them reaches the disk in the clear.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use spoor_generate::dora::Event;
use spoor_seal::{DataKey, Header, Layout, MasterKey};
use spoor_wal::Durability;

use crate::dora::config::DoraConfig;
use crate::error::{Error, StartupError};
use crate::metrics::{Metrics, names};

const HEADER: usize = 8;
/// No event comes near this; a larger length is a corrupt record.
const MAX_RECORD: usize = 1 << 20;
const DAY_NS: u64 = 86_400 * 1_000_000_000;

type Key = (u8, String, String);

fn key_of(e: &Event) -> Key {
    let (k, t, s) = e.key();
    (k, t.to_string(), s.to_string())
}

pub struct Store {
    dir: PathBuf,
    retention_ns: u64,
    max_events: usize,
    fsync: bool,
    seal: Option<Arc<MasterKey>>,
    tenants: Mutex<HashMap<String, Arc<Mutex<Log>>>>,
    metrics: Arc<Metrics>,
}

/// One tenant's file and what it holds.
struct Log {
    path: PathBuf,
    /// Opened on the first append.
    file: Option<File>,
    /// Bytes of the header and whole records in the file.
    len: u64,
    /// The file's data key, when the store is sealed.
    key: Option<DataKey>,
    events: Vec<Event>,
    keys: HashSet<Key>,
}

impl Store {
    /// Opens `<data_dir>/dora`, loading every tenant's events.
    pub fn open(
        data_dir: &Path,
        config: &DoraConfig,
        durability: Durability,
        seal: Option<Arc<MasterKey>>,
        metrics: Arc<Metrics>,
        now_ns: u64,
    ) -> Result<Store, StartupError> {
        let dir = data_dir.join("dora");
        let fail = |what: String, e: std::io::Error| StartupError::new(format!("{what}: {e}")).with_source(e);
        std::fs::create_dir_all(&dir).map_err(|e| fail(format!("cannot create {}", dir.display()), e))?;
        let store = Store {
            dir: dir.clone(),
            retention_ns: config.retention_days.saturating_mul(DAY_NS),
            max_events: config.max_events_per_tenant,
            fsync: durability == Durability::Fsync,
            seal,
            tenants: Mutex::new(HashMap::new()),
            metrics,
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| fail(format!("cannot read {}", dir.display()), e))?;
        for entry in entries {
            let path = entry.map_err(|e| fail(format!("cannot read {}", dir.display()), e))?.path();
            let Some(tenant) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(tenant_from_file)
            else {
                continue;
            };
            let log =
                load(&path, store.seal.as_deref()).map_err(|e| fail(format!("cannot load {}", path.display()), e))?;
            store.tenants.lock().unwrap().insert(tenant, Arc::new(Mutex::new(log)));
        }
        store.prune(now_ns).map_err(|e| StartupError::new(format!("cannot prune the DORA store: {e}")))?;
        Ok(store)
    }

    /// Stores `events` of `tenant` durably; those already stored are skipped. An error means
    /// none of them was stored and the request must be refused.
    pub fn record(&self, tenant: &str, events: Vec<Event>, now_ns: u64) -> Result<(), Error> {
        let oldest = now_ns.saturating_sub(self.retention_ns);
        let log = self.log(tenant);
        let mut log = log.lock().unwrap();
        let mut fresh = Vec::new();
        let refused = |reason: &'static str| {
            self.metrics.inc(names::DORA_EVENTS_REFUSED_TOTAL, &[("tenant", tenant), ("reason", reason)], 1.0);
        };
        let mut batch = HashSet::new();
        for e in events {
            let k = key_of(&e);
            if log.keys.contains(&k) || !batch.insert(k) {
                continue;
            }
            if e.time_ns() < oldest {
                refused("too_old");
            } else if log.events.len() + fresh.len() >= self.max_events {
                refused("max_events");
            } else {
                fresh.push(e);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let fail = |e: std::io::Error| {
            tracing::warn!(tenant, error = %e, "cannot store DORA events; request refused");
            Error::unavailable(format!("cannot store DORA events: {e}; retry later"), 1).with_source(e)
        };
        log.append(&fresh, self.seal.as_deref(), self.fsync).map_err(fail)?;
        for e in fresh {
            log.keys.insert(key_of(&e));
            log.events.push(e);
        }
        self.metrics.set(names::DORA_EVENTS, &[("tenant", tenant)], log.events.len() as f64);
        Ok(())
    }

    /// Every event of `tenants`, cloned (a query works on a snapshot).
    pub fn events(&self, tenants: &[String]) -> Vec<Event> {
        let logs: Vec<_> = {
            let map = self.tenants.lock().unwrap();
            tenants.iter().filter_map(|t| map.get(t).cloned()).collect()
        };
        logs.iter().flat_map(|l| l.lock().unwrap().events.clone()).collect()
    }

    /// The traces of `tenant`'s deployments and incidents: the sampled retention tier keeps them.
    pub fn kept_traces(&self, tenant: &str) -> Vec<spoor_model::TraceId> {
        let Some(log) = self.tenants.lock().unwrap().get(tenant).cloned() else { return Vec::new() };
        let log = log.lock().unwrap();
        log.events
            .iter()
            .filter_map(|e| match e {
                Event::Deployment(d) => Some(&d.trace_id),
                Event::Incident(i) => Some(&i.trace_id),
                Event::Change(_) => None,
            })
            .filter_map(|id| spoor_model::TraceId::parse_api(id).ok())
            .collect()
    }

    pub fn tenants(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tenants.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// Drops events older than the retention, rewriting the files that held any, and sets
    /// the per-tenant event gauge.
    pub fn prune(&self, now_ns: u64) -> std::io::Result<()> {
        let oldest = now_ns.saturating_sub(self.retention_ns);
        let logs: Vec<_> = self.tenants.lock().unwrap().iter().map(|(t, l)| (t.clone(), l.clone())).collect();
        for (tenant, log) in logs {
            let mut log = log.lock().unwrap();
            let before = log.events.len();
            log.events.retain(|e| e.time_ns() >= oldest);
            if log.events.len() != before {
                log.rewrite(self.seal.as_deref())?;
            }
            self.metrics.set(names::DORA_EVENTS, &[("tenant", &tenant)], log.events.len() as f64);
        }
        Ok(())
    }

    fn log(&self, tenant: &str) -> Arc<Mutex<Log>> {
        let mut map = self.tenants.lock().unwrap();
        map.entry(tenant.to_string())
            .or_insert_with(|| {
                let path = self.dir.join(format!("{}.log", spoor_model::ids::hex(tenant.as_bytes())));
                Arc::new(Mutex::new(Log {
                    path,
                    file: None,
                    len: 0,
                    key: None,
                    events: Vec::new(),
                    keys: HashSet::new(),
                }))
            })
            .clone()
    }
}

impl Log {
    /// Appends `events` as whole records; on failure the file is cut back to its last whole
    /// record. A new file under a master key starts with its sealed header.
    fn append(&mut self, events: &[Event], seal: Option<&MasterKey>, fsync: bool) -> std::io::Result<()> {
        let mut buf = Vec::new();
        if self.file.is_none() {
            let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            if self.len == 0 {
                if let Some(master) = seal {
                    let (header, key) = Header::new(master, Layout::Records);
                    buf.extend_from_slice(&header.encode());
                    self.key = Some(key);
                }
                // A new file must survive a crash: its directory entry too.
                sync_dir(&self.path)?;
            }
            self.file = Some(file);
        }
        for e in events {
            encode(e, self.key.as_ref(), &mut buf);
        }
        let file = self.file.as_mut().expect("opened above");
        let written = file.write_all(&buf).and_then(|()| if fsync { file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Replaces the file with one holding exactly `events` (under a new data key when sealed).
    fn rewrite(&mut self, seal: Option<&MasterKey>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let key = seal.map(|master| {
            let (header, key) = Header::new(master, Layout::Records);
            buf.extend_from_slice(&header.encode());
            key
        });
        for e in &self.events {
            encode(e, key.as_ref(), &mut buf);
        }
        let tmp = self.path.with_extension("log.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path)?;
        self.file = None;
        self.len = buf.len() as u64;
        self.key = key;
        self.keys = self.events.iter().map(key_of).collect();
        Ok(())
    }
}

fn encode(e: &Event, key: Option<&DataKey>, out: &mut Vec<u8>) {
    let json = serde_json::to_vec(e).expect("events serialize");
    let payload = match key {
        None => json,
        Some(key) => {
            let mut sealed = Vec::with_capacity(json.len() + spoor_seal::RECORD_OVERHEAD);
            spoor_seal::seal_record(key, &json, &mut sealed);
            sealed
        }
    };
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// The events of a file; a torn or corrupt tail is cut off (what follows a bad record cannot
/// be framed reliably, and only an interrupted append leaves one). A file sealed under another
/// key, or sealed while no key is configured (or the reverse), stops the start, as the WAL does.
fn load(path: &Path, seal: Option<&MasterKey>) -> std::io::Result<Log> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let (start, key) = spoor_seal::log_start(&bytes, path, seal)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    // A header cut short as the file was created: nothing was stored; it starts again.
    let torn_header = start > 0 && key.is_none();
    let (events, good) = if torn_header { (Vec::new(), 0) } else { decode(&bytes, start, key.as_ref()) };
    if good < bytes.len() {
        tracing::warn!(file = %path.display(), kept = good, cut = bytes.len() - good, "DORA store: torn tail cut off");
        OpenOptions::new().write(true).open(path)?.set_len(good as u64)?;
    }
    let mut keys = HashSet::new();
    let events: Vec<Event> = events.into_iter().filter(|e| keys.insert(key_of(e))).collect();
    Ok(Log { path: path.to_path_buf(), file: None, len: good as u64, key, events, keys })
}

/// The whole records of `bytes` from `start`, and where they end.
fn decode(bytes: &[u8], start: usize, key: Option<&DataKey>) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut at = start;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let json = match key {
            None => payload.to_vec(),
            Some(key) => match spoor_seal::open_record(key, payload) {
                Ok(plain) => plain,
                Err(_) => break,
            },
        };
        let Ok(e) = serde_json::from_slice::<Event>(&json) else { break };
        events.push(e);
        at += HEADER + len;
    }
    (events, at)
}

fn tenant_from_file(stem: &str) -> Option<String> {
    if !stem.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..stem.len()).step_by(2).map(|i| u8::from_str_radix(stem.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use spoor_generate::dora::{Change, Deployment};

    use super::*;

    fn deployment(span: &str, end_ns: u64) -> Event {
        Event::Deployment(Deployment {
            trace_id: "ab".into(),
            span_id: span.into(),
            end_ns,
            environment: "prod".into(),
            ..Default::default()
        })
    }

    const NOW: u64 = 1_000 * DAY_NS;

    fn open(dir: &Path, config: &DoraConfig) -> Store {
        Store::open(dir, config, Durability::Fsync, None, Arc::new(Metrics::default()), NOW).unwrap()
    }

    fn master(b: u8) -> Option<Arc<MasterKey>> {
        Some(Arc::new(MasterKey::from_bytes(&[b; 32], Path::new(&format!("key-{b}")))))
    }

    fn open_sealed(dir: &Path, seal: Option<Arc<MasterKey>>) -> Result<Store, StartupError> {
        Store::open(dir, &DoraConfig::default(), Durability::Fsync, seal, Arc::new(Metrics::default()), NOW)
    }

    #[test]
    fn a_sealed_store_keeps_nothing_in_the_clear_and_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = |span: &str| {
            Event::Deployment(Deployment {
                trace_id: "ab".into(),
                span_id: span.into(),
                end_ns: NOW,
                environment: "prod".into(),
                service: "payments-svc-4711".into(),
                revision: "rev-cafe-4711".into(),
                ..Default::default()
            })
        };
        let store = open_sealed(dir.path(), master(1)).unwrap();
        store.record("t", vec![deploy("01"), deploy("02")], NOW).unwrap();
        store.record("t", vec![deploy("03")], NOW).unwrap();
        drop(store);
        let file = dir.path().join("dora").join(format!("{}.log", spoor_model::ids::hex(b"t")));
        let bytes = std::fs::read(&file).unwrap();
        assert!(spoor_seal::is_sealed(&bytes));
        for clear in ["payments-svc-4711", "rev-cafe-4711", "prod"] {
            assert!(!bytes.windows(clear.len()).any(|w| w == clear.as_bytes()), "{clear} in the clear");
        }
        // Back with its key, after a torn tail; a rewrite (retention) stays sealed.
        OpenOptions::new().append(true).open(&file).unwrap().write_all(&[40, 0, 0, 0, 1]).unwrap();
        let store = open_sealed(dir.path(), master(1)).unwrap();
        assert_eq!(store.events(&["t".into()]).len(), 3);
        store.log("t").lock().unwrap().rewrite(store.seal.as_deref()).unwrap();
        store.record("t", vec![deploy("04")], NOW).unwrap();
        drop(store);
        assert!(spoor_seal::is_sealed(&std::fs::read(&file).unwrap()));
        assert_eq!(open_sealed(dir.path(), master(1)).unwrap().events(&["t".into()]).len(), 4);
        // Another key, or none, stops the start naming the file.
        for seal in [master(2), None] {
            let e = open_sealed(dir.path(), seal).err().expect("refused");
            assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        }
        // A plaintext store under a key is refused too (as the WAL refuses it).
        let plain = tempfile::tempdir().unwrap();
        open(plain.path(), &DoraConfig::default()).record("t", vec![deploy("01")], NOW).unwrap();
        assert!(open_sealed(plain.path(), master(1)).err().expect("refused").to_string().contains("not encrypted"));
    }

    #[test]
    fn events_survive_a_restart_once_each_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let config = DoraConfig::default();
        let store = open(dir.path(), &config);
        let change = Event::Change(Change { trace_id: "ab".into(), span_id: "01".into(), start_ns: NOW - 5 });
        store.record("t|1", vec![deployment("02", NOW), change.clone(), deployment("02", NOW)], NOW).unwrap();
        store.record("t|1", vec![deployment("02", NOW), deployment("03", NOW)], NOW).unwrap();
        assert_eq!(store.events(&["t|1".into()]).len(), 3);
        drop(store);
        let file = dir.path().join("dora").join(format!("{}.log", spoor_model::ids::hex(b"t|1")));
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let store = open(dir.path(), &config);
        assert_eq!(store.tenants(), ["t|1"]);
        let events = store.events(&["t|1".into()]);
        assert_eq!(events.len(), 3);
        assert!(events.contains(&change));
        store.record("t|1", vec![deployment("04", NOW)], NOW).unwrap();
        drop(store);
        assert_eq!(open(dir.path(), &config).events(&["t|1".into()]).len(), 4);
    }

    #[test]
    fn retention_and_the_cap_bound_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = DoraConfig { retention_days: 10, max_events_per_tenant: 2, ..DoraConfig::default() };
        let store = open(dir.path(), &config);
        store.record("t", vec![deployment("01", NOW - 11 * DAY_NS), deployment("02", NOW - DAY_NS)], NOW).unwrap();
        store.record("t", vec![deployment("03", NOW), deployment("04", NOW)], NOW).unwrap();
        let kept: Vec<String> = store.events(&["t".into()]).iter().map(|e| e.key().2.to_string()).collect();
        assert_eq!(kept, ["02", "03"]);
        // Nine days on, 02 is past the retention.
        store.prune(NOW + 9 * DAY_NS + 1).unwrap();
        drop(store);
        let store = Store::open(dir.path(), &config, Durability::Os, None, Arc::new(Metrics::default()), NOW).unwrap();
        assert_eq!(store.events(&["t".into()]).len(), 1);
        assert_eq!(decode(&[1, 0, 0, 0, 0, 0, 0, 0, b'x'], 0, None).1, 0);
    }
}
