//! The tokens file (`auth.tokens_file`): who may call, for which tenants, in which roles. Only
//! SHA-256 digests of tokens are stored; a presented token is hashed and compared with every
//! entry in constant time. The file is read again when it changes; a bad new version is logged
//! and the previous one stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::auth::mask::Mask;
use crate::auth::spans::SpanFilter;
use crate::ingest::tenant;

/// What a token may do. `admin` does not imply the others: a flush token cannot read traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send spans (the OTLP ports).
    Ingest,
    /// Query traces, search, tags, TraceQL metrics, generated metrics.
    Read,
    /// `/flush` and anything else that changes the server's state; `/metrics` when protected.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// One entry of the tokens file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    /// The token's digest; may be left out when `client_cert` identifies the caller.
    #[serde(default)]
    sha256: String,
    /// A subject common name or subject alternative name (DNS, URI, e-mail) of a client
    /// certificate that stands for this entry on listeners requiring client certificates.
    #[serde(default)]
    client_cert: String,
    tenants: Vec<String>,
    roles: Vec<Role>,
    /// Attribute keys masked on every read path (see `mask`).
    #[serde(default)]
    mask: Vec<String>,
    /// A TraceQL spanset filter limiting the spans the token sees (see `spans`).
    #[serde(default)]
    spans: String,
}

/// A caller the tokens file knows.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    /// Empty with `all_tenants`.
    pub tenants: Vec<String>,
    pub all_tenants: bool,
    pub roles: Vec<Role>,
    /// `None` when the entry masks nothing.
    pub mask: Option<Arc<Mask>>,
    /// `None` when the entry sees every span.
    pub spans: Option<Arc<SpanFilter>>,
    /// `None` for an entry that only a client certificate selects.
    digest: Option<[u8; 32]>,
    /// The client certificate name that selects this entry; empty for none.
    client_cert: String,
}

impl Identity {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn may_use(&self, tenant: &str) -> bool {
        self.all_tenants || self.tenants.iter().any(|t| t == tenant)
    }

    /// The tenant a request without `X-Scope-OrgID` belongs to: the token's only one.
    /// An identity vouched for by someone else (an OIDC provider): no digest, nothing masked.
    pub fn from_provider(name: String, tenants: Vec<String>, all_tenants: bool, roles: Vec<Role>) -> Identity {
        Identity {
            name,
            tenants,
            all_tenants,
            roles,
            mask: None,
            spans: None,
            digest: None,
            client_cert: String::new(),
        }
    }

    pub fn sole_tenant(&self) -> Option<&str> {
        match self.tenants.as_slice() {
            [one] if !self.all_tenants => Some(one),
            _ => None,
        }
    }
}

/// Parses and checks a tokens file's text. `path` is named in every message.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Arc<Identity>>, String> {
    let at = |msg: String| format!("auth.tokens_file {}: {msg}", path.display());
    let entries: Vec<Entry> = serde_saphyr::from_str(text).map_err(|e| at(e.to_string()))?;
    let mut out: Vec<Arc<Identity>> = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let entry = |msg: String| at(format!("entry {i} ({:?}): {msg}", e.name));
        if e.name.trim().is_empty() {
            return Err(at(format!("entry {i}: name is empty")));
        }
        let mask = Mask::parse(&e.mask).map_err(entry)?;
        let spans = match e.spans.trim() {
            "" => None,
            text => Some(Arc::new(SpanFilter::parse(text).map_err(entry)?)),
        };
        let client_cert = e.client_cert.trim().to_owned();
        let digest = match e.sha256.trim() {
            "" if !client_cert.is_empty() => None,
            "" => return Err(entry("needs sha256 (a token's digest) or client_cert (a certificate name)".into())),
            hex => Some(hex32(hex).ok_or_else(|| {
                entry("sha256 must be the 64 hex digits of the token's SHA-256 digest (never the token itself)".into())
            })?),
        };
        if e.tenants.is_empty() {
            return Err(entry("tenants is empty; name tenants or use [\"*\"] for all".into()));
        }
        let all_tenants = e.tenants.iter().any(|t| t == "*");
        for t in e.tenants.iter().filter(|t| *t != "*") {
            tenant::validate(t).map_err(|err| entry(err.to_string()))?;
        }
        if e.roles.is_empty() {
            return Err(entry("roles is empty; use ingest, read and/or admin".into()));
        }
        if let Some(other) = out.iter().find(|o| o.name == e.name) {
            return Err(entry(format!("name {:?} is used twice", other.name)));
        }
        if let Some(other) = out.iter().find(|o| digest.is_some() && o.digest == digest) {
            return Err(entry(format!("same sha256 as entry {:?}", other.name)));
        }
        if let Some(other) = out.iter().find(|o| !client_cert.is_empty() && o.client_cert == client_cert) {
            return Err(entry(format!("same client_cert as entry {:?}", other.name)));
        }
        let tenants = if all_tenants { Vec::new() } else { e.tenants };
        let mask = (!mask.is_empty()).then(|| Arc::new(mask));
        out.push(Arc::new(Identity {
            name: e.name,
            tenants,
            all_tenants,
            roles: e.roles,
            mask,
            spans,
            digest,
            client_cert,
        }));
    }
    Ok(out)
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi << 4 | lo) as u8;
    }
    Some(out)
}

/// The identities in force and the file bytes they came from (to tell whether it changed).
type Loaded = (Arc<Vec<Arc<Identity>>>, Vec<u8>);

/// The tokens in force, replaced when the file changes.
pub struct Tokens {
    path: PathBuf,
    current: RwLock<Loaded>,
}

/// How often the tokens file is looked at: reading a small file once a second costs nothing,
/// and a revoked token stops working within a second.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

impl Tokens {
    /// Reads the file; an unreadable or invalid one stops the process, naming it.
    /// Without a path (OIDC tokens only) there are no tokens.
    pub fn open(path: &Path) -> Result<Arc<Tokens>, String> {
        if path.as_os_str().is_empty() {
            return Ok(Arc::new(Tokens {
                path: PathBuf::new(),
                current: RwLock::new((Arc::new(Vec::new()), Vec::new())),
            }));
        }
        let bytes = read(path)?;
        let ids = parse(&String::from_utf8_lossy(&bytes), path)?;
        Ok(Arc::new(Tokens { path: path.to_owned(), current: RwLock::new((Arc::new(ids), bytes)) }))
    }

    #[cfg(test)]
    pub fn from_text(text: &str) -> Tokens {
        let ids = parse(text, Path::new("test.yaml")).unwrap();
        Tokens { path: PathBuf::new(), current: RwLock::new((Arc::new(ids), Vec::new())) }
    }

    /// The identity whose digest matches the token's. Every entry is compared, each in constant
    /// time, so timing tells nothing about how close a guess came or which entry matched.
    pub fn lookup(&self, token: &str) -> Option<Arc<Identity>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let ids = self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone();
        let mut found = None;
        for id in ids.iter() {
            if let Some(d) = &id.digest
                && bool::from(d.ct_eq(&digest))
            {
                found = Some(id.clone());
            }
        }
        found
    }

    /// The entry a verified client certificate names (by its common name or a subject
    /// alternative name).
    pub fn lookup_cert(&self, names: &[String]) -> Option<Arc<Identity>> {
        let ids = self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone();
        ids.iter().find(|id| !id.client_cert.is_empty() && names.contains(&id.client_cert)).cloned()
    }

    /// Reads the file again; `Ok(true)` when a changed, valid version took over.
    pub fn reload(&self) -> Result<bool, String> {
        let bytes = read(&self.path)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == bytes {
            return Ok(false);
        }
        let ids = parse(&String::from_utf8_lossy(&bytes), &self.path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(ids), bytes);
        Ok(true)
    }

    /// Re-reads the file while the process serves, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, stop: watch::Receiver<bool>) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let me = self.clone();
        crate::reload::every(
            RELOAD_EVERY,
            stop,
            move || me.reload(),
            || tracing::info!(file = %self.path.display(), "auth tokens reloaded"),
            |e| tracing::warn!(error = %e, "cannot reload auth tokens; the previous ones stay in force"),
        )
        .await
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read auth.tokens_file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn finds_tokens_by_digest() {
        let text = format!(
            "- {{name: a-reader, sha256: {}, tenants: [a], roles: [read]}}\n- {{name: root, sha256: \"{}\", tenants: [\"*\"], roles: [admin, read, ingest]}}\n",
            sha("secret-a"),
            sha("secret-root").to_uppercase()
        );
        let t = Tokens::from_text(&text);
        let a = t.lookup("secret-a").unwrap();
        assert_eq!(
            (a.name.as_str(), a.sole_tenant(), a.has_role(Role::Read), a.has_role(Role::Admin)),
            ("a-reader", Some("a"), true, false)
        );
        assert!(a.may_use("a") && !a.may_use("b"));
        let root = t.lookup("secret-root").unwrap();
        assert!(root.may_use("anything") && root.sole_tenant().is_none());
        assert!(t.lookup("secret-b").is_none() && t.lookup("").is_none());
    }

    #[test]
    fn client_certificates_name_entries() {
        let text = format!(
            "- {{name: c, client_cert: collector-7, tenants: [a], roles: [ingest]}}\n- {{name: g, sha256: {}, client_cert: 'spiffe://x/g', tenants: [a], roles: [read]}}\n",
            sha("secret-g")
        );
        let t = Tokens::from_text(&text);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(t.lookup_cert(&names(&["other", "collector-7"])).unwrap().name, "c");
        assert_eq!(t.lookup_cert(&names(&["spiffe://x/g"])).unwrap().name, "g");
        assert_eq!(t.lookup("secret-g").unwrap().name, "g");
        assert!(t.lookup_cert(&names(&["collector-8"])).is_none() && t.lookup("").is_none());
        let p = Path::new("tokens.yaml");
        let err = parse("- {name: a, tenants: [a], roles: [read]}", p).unwrap_err();
        assert!(err.contains("needs sha256") && err.contains("client_cert"), "{err}");
        let twice = "- {name: a, client_cert: x, tenants: [a], roles: [read]}\n- {name: b, client_cert: x, tenants: [a], roles: [read]}";
        assert!(parse(twice, p).unwrap_err().contains("same client_cert"));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let p = Path::new("tokens.yaml");
        let good = sha("x");
        for (text, expect) in [
            (
                format!("- {{name: a, sha256: {good}, tenants: [a], roles: [read], mask: [user.email]}}"),
                "unknown scope \"user\"",
            ),
            (
                format!("- {{name: a, sha256: {good}, tenants: [a], roles: [read], spans: '{{ }} | count() > 1'}}"),
                "spans: must be one spanset filter",
            ),
            ("- {name: a, sha256: secret, tenants: [a], roles: [read]}".to_string(), "64 hex digits"),
            (format!("- {{name: a, sha256: {good}, tenants: [], roles: [read]}}"), "tenants is empty"),
            (format!("- {{name: a, sha256: {good}, tenants: [a], roles: [write]}}"), "write"),
            (format!("- {{name: a, sha256: {good}, tenants: [../x], roles: [read]}}"), "invalid tenant ID"),
            (format!("- {{name: a, sha256: {good}, tenants: [a], roles: [read], extra: 1}}"), "extra"),
            (
                format!(
                    "- {{name: a, sha256: {good}, tenants: [a], roles: [read]}}\n- {{name: a, sha256: {}, tenants: [a], roles: [read]}}",
                    sha("y")
                ),
                "used twice",
            ),
        ] {
            let err = parse(&text, p).unwrap_err();
            assert!(err.contains(expect) && err.contains("tokens.yaml"), "{text}: {err}");
        }
    }
}
