//! OIDC bearer tokens (`auth.oidc`): a JWT from the configured issuer, for the configured
//! audience, signed by a key of the provider's key set, is an identity whose tenants and roles
//! are read from two of its claims. The key set comes from a file (read again when it changes)
//! or from the provider's `jwks_uri` (fetched at start, every `jwks_refresh_interval`, and when
//! a token names a key the cached set does not hold, which is how providers roll keys).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::watch;

use crate::auth::jwt::{self, Claims, Expect, KeySet, Refusal};
use crate::auth::tokens::{Identity, Role};
use crate::tls::ClientTlsConfig;

/// The `auth.oidc:` section. On when `issuer_url` is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must carry (the provider's issuer identifier).
    pub issuer_url: String,
    /// A value the token's `aud` must hold (the client ID Spoor is registered under).
    pub audience: String,
    /// The provider's key set (JWKS) as a file; read again when it changes.
    pub jwks_file: PathBuf,
    /// … or its URL (`jwks_uri` of the provider's discovery document).
    pub jwks_url: String,
    /// TLS for an `https://` `jwks_url` (the shape of every client `tls` block).
    pub tls: ClientTlsConfig,
    /// How often `jwks_url` is fetched again (also fetched when a token names an unknown key).
    #[serde(with = "spoor_process::duration")]
    pub jwks_refresh_interval: Duration,
    /// The claim listing the tenants (a list, or one string of names separated by spaces or
    /// commas; `*` is every tenant). A dotted name reaches into objects (`spoor.tenants`).
    pub tenants_claim: String,
    /// The claim listing the roles (`ingest`, `read`, `admin`; other values are ignored, as
    /// providers put unrelated groups there).
    pub roles_claim: String,
    /// The claim naming the caller in logs and the audit log.
    pub name_claim: String,
    /// Clock skew forgiven on `exp` and `nbf`.
    #[serde(with = "spoor_process::duration")]
    pub leeway: Duration,
    /// What a token may see, by the value of one of its claims (a group, a department): the
    /// first rule that matches gives the identity its `mask` and `spans`, as a tokens-file entry
    /// has them. No rule matching: everything the tenants and roles allow.
    pub restrictions: Vec<OidcRestriction>,
}

/// One `auth.oidc.restrictions` rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OidcRestriction {
    /// The claim to look at (dotted names reach into objects, as for `tenants_claim`).
    pub claim: String,
    /// Matches when the claim is this string, or a list (or space/comma-separated string) holding it.
    pub value: String,
    /// Keys whose values read as `"[masked]"` (the tokens file's `mask`).
    pub mask: Vec<String>,
    /// A TraceQL spanset filter: other spans become placeholders (the tokens file's `spans`).
    pub spans: String,
}

/// A rule, compiled.
struct Restriction {
    claim: String,
    value: String,
    mask: Option<Arc<crate::auth::mask::Mask>>,
    spans: Option<Arc<crate::auth::spans::SpanFilter>>,
}

impl Restriction {
    fn compile(i: usize, r: &OidcRestriction) -> Result<Restriction, String> {
        let at = |m: String| format!("auth.oidc.restrictions[{i}]: {m}");
        if r.claim.is_empty() || r.value.is_empty() {
            return Err(at("claim and value are required".into()));
        }
        if r.mask.is_empty() && r.spans.trim().is_empty() {
            return Err(at("restricts nothing: give it mask, spans or both".into()));
        }
        let mask = crate::auth::mask::Mask::parse(&r.mask).map_err(at)?;
        let spans = match r.spans.trim() {
            "" => None,
            text => Some(Arc::new(crate::auth::spans::SpanFilter::parse(text).map_err(at)?)),
        };
        let mask = (!mask.is_empty()).then(|| Arc::new(mask));
        Ok(Restriction { claim: r.claim.clone(), value: r.value.clone(), mask, spans })
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer_url: String::new(),
            audience: String::new(),
            jwks_file: PathBuf::new(),
            jwks_url: String::new(),
            tls: ClientTlsConfig::default(),
            jwks_refresh_interval: Duration::from_secs(300),
            tenants_claim: "tenants".into(),
            roles_claim: "roles".into(),
            name_claim: "sub".into(),
            leeway: Duration::from_secs(60),
            restrictions: Vec::new(),
        }
    }
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer_url.is_empty()
    }

    fn validate(&self) -> Result<(), String> {
        let file = !self.jwks_file.as_os_str().is_empty();
        let url = !self.jwks_url.is_empty();
        if self.audience.trim().is_empty() {
            return Err("auth.oidc.audience is not set (the aud value tokens for Spoor carry)".into());
        }
        if file == url {
            return Err("auth.oidc: set exactly one of jwks_file and jwks_url".into());
        }
        if self.tenants_claim.is_empty() || self.roles_claim.is_empty() || self.name_claim.is_empty() {
            return Err("auth.oidc: tenants_claim, roles_claim and name_claim must not be empty".into());
        }
        if url && self.jwks_refresh_interval < Duration::from_secs(1) {
            return Err("auth.oidc.jwks_refresh_interval must be at least 1s".into());
        }
        self.tls.validate().map_err(|e| format!("auth.oidc.{e}"))
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

enum Source {
    File(PathBuf),
    Url { uri: Uri, client: Box<HttpClient> },
}

/// A fetch on an unknown `kid` happens at most this often, so tokens naming made-up keys
/// cannot make Spoor hammer the provider.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// A key set larger than this is refused (providers publish a handful of keys).
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `jwks_file` is looked at, as for the tokens file.
const FILE_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The OIDC verifier of a process.
pub struct Oidc {
    cfg: OidcConfig,
    restrictions: Vec<Restriction>,
    source: Source,
    /// The keys in force and the bytes they came from (to tell whether a new read changed them).
    keys: RwLock<(Arc<KeySet>, Vec<u8>)>,
    /// When the URL was last fetched; `None` before the first fetch.
    fetched: Mutex<Option<Instant>>,
    /// When a token's unknown `kid` last caused a fetch: the periodic fetch does not count,
    /// so a key rolled just after it is still picked up at once.
    refetched: Mutex<Option<Instant>>,
    /// One fetch at a time: concurrent requests with an unknown key wait for the same fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl Oidc {
    /// Checks the settings and reads `jwks_file`; a URL is fetched by `watch` (at once) or by
    /// the first token that needs it.
    pub fn open(cfg: &OidcConfig) -> Result<Arc<Oidc>, String> {
        cfg.validate()?;
        let restrictions =
            cfg.restrictions.iter().enumerate().map(|(i, r)| Restriction::compile(i, r)).collect::<Result<_, _>>()?;
        let (source, keys) = if cfg.jwks_url.is_empty() {
            let bytes = read(&cfg.jwks_file)?;
            let keys = parse_at(&bytes, &cfg.jwks_file.display().to_string())?;
            (Source::File(cfg.jwks_file.clone()), (Arc::new(keys), bytes))
        } else {
            let uri: Uri = cfg.jwks_url.parse().map_err(|e| format!("auth.oidc.jwks_url {:?}: {e}", cfg.jwks_url))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!("auth.oidc.jwks_url {:?}: must be an http:// or https:// URL", cfg.jwks_url));
            }
            let connector =
                crate::tls::client::connector(false, &cfg.tls).map_err(|e| format!("auth.oidc.jwks_url: {e}"))?;
            let client = Client::builder(TokioExecutor::new()).build(connector);
            (Source::Url { uri, client: Box::new(client) }, (Arc::new(KeySet::default()), Vec::new()))
        };
        Ok(Arc::new(Oidc {
            cfg: cfg.clone(),
            restrictions,
            source,
            keys: RwLock::new(keys),
            fetched: Mutex::new(None),
            refetched: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }))
    }

    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// The identity a JWT stands for, or why it stands for none (a message for a 401 that
    /// never quotes the token).
    pub async fn identify(&self, token: &str) -> Result<Identity, String> {
        let claims = match jwt::verify(token, &self.keys()) {
            Ok(c) => c,
            Err(Refusal::UnknownKid(kid)) => {
                self.refetch().await;
                match jwt::verify(token, &self.keys()) {
                    Ok(c) => c,
                    Err(Refusal::UnknownKid(_)) => {
                        return Err(format!("the JWT names key {kid:?}, which the OIDC key set does not hold"));
                    }
                    Err(Refusal::Invalid(m)) => return Err(m),
                }
            }
            Err(Refusal::Invalid(m)) => return Err(m),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let expect = Expect {
            issuer: &self.cfg.issuer_url,
            audience: &self.cfg.audience,
            leeway: self.cfg.leeway.as_secs(),
            now,
        };
        jwt::check_claims(&claims, &expect)?;
        Ok(self.identity(&claims))
    }

    fn identity(&self, claims: &Claims) -> Identity {
        let name = claim(claims, &self.cfg.name_claim).and_then(Json::as_str).unwrap_or("(no name claim)");
        let tenants = strings(claim(claims, &self.cfg.tenants_claim));
        let all = tenants.iter().any(|t| t == "*");
        let tenants: Vec<String> = if all {
            Vec::new()
        } else {
            tenants.into_iter().filter(|t| crate::ingest::tenant::validate(t).is_ok()).collect()
        };
        let mut roles = Vec::new();
        for r in strings(claim(claims, &self.cfg.roles_claim)) {
            let role = match r.as_str() {
                "ingest" => Role::Ingest,
                "read" => Role::Read,
                "admin" => Role::Admin,
                _ => continue,
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let mut identity = Identity::from_provider(format!("oidc:{name}"), tenants, all, roles);
        if let Some(r) = self.restrictions.iter().find(|r| strings(claim(claims, &r.claim)).contains(&r.value)) {
            identity.mask = r.mask.clone();
            identity.spans = r.spans.clone();
        }
        identity
    }

    /// Fetches the URL again unless a fetch happened moments ago.
    async fn refetch(&self) {
        let Source::Url { .. } = self.source else { return };
        let started = Instant::now();
        let _one = self.fetching.lock().await;
        let last = *self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut refetched = self.refetched.lock().unwrap_or_else(|e| e.into_inner());
            // Someone else fetched while we waited, or an unknown kid caused a fetch moments ago.
            if last.is_some_and(|t| t >= started) || refetched.is_some_and(|t| t.elapsed() < REFETCH_AT_MOST_EVERY) {
                return;
            }
            *refetched = Some(Instant::now());
        }
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "cannot fetch the OIDC key set; the previous keys stay in force");
        }
    }

    async fn fetch(&self) -> Result<bool, String> {
        let Source::Url { uri, client } = &self.source else { return Ok(false) };
        *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let at = |m: String| format!("auth.oidc.jwks_url {uri}: {m}");
        let get = async {
            let req = hyper::Request::get(uri.clone())
                .header(hyper::header::ACCEPT, "application/json")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
            if !resp.status().is_success() {
                return Err(format!("answered {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?;
            Ok(body.to_bytes().to_vec())
        };
        let bytes = tokio::time::timeout(FETCH_TIMEOUT, get).await.map_err(|_| at("timed out".into()))?.map_err(at)?;
        self.install(bytes, &uri.to_string())
    }

    /// Puts a new key set in force if `bytes` changed and parse.
    fn install(&self, bytes: Vec<u8>, origin: &str) -> Result<bool, String> {
        if self.keys.read().unwrap_or_else(|e| e.into_inner()).1 == bytes {
            return Ok(false);
        }
        let keys = parse_at(&bytes, origin)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(keys), bytes);
        Ok(true)
    }

    /// Keeps the key set current while the process serves, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        match &self.source {
            Source::File(path) => {
                let (me, path) = (self.clone(), path.clone());
                let shown = path.display().to_string();
                crate::reload::every(
                    FILE_RELOAD_EVERY,
                    stop,
                    move || me.install(read(&path)?, &path.display().to_string()),
                    || tracing::info!(file = %shown, "OIDC key set reloaded"),
                    |e| tracing::warn!(error = %e, "cannot reload the OIDC key set; the previous keys stay in force"),
                )
                .await
            }
            Source::Url { .. } => {
                let mut tick = tokio::time::interval(self.cfg.jwks_refresh_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    let _one = self.fetching.lock().await;
                    match self.fetch().await {
                        Ok(true) => tracing::info!(keys = self.keys().len(), "OIDC key set fetched"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot fetch the OIDC key set; the previous keys stay in force")
                        }
                    }
                }
            }
        }
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read auth.oidc.jwks_file {}: {e}", path.display()))
}

fn parse_at(bytes: &[u8], origin: &str) -> Result<KeySet, String> {
    KeySet::parse(bytes).map_err(|e| format!("OIDC key set {origin}: {e}"))
}

/// A claim by name, or by a dotted path into nested objects when no claim has the whole name
/// (Keycloak puts roles under `realm_access.roles`).
fn claim<'a>(claims: &'a Claims, name: &str) -> Option<&'a Json> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// A claim's values: a list of strings, or one string of names separated by spaces or commas.
fn strings(v: Option<&Json>) -> Vec<String> {
    match v {
        Some(Json::String(s)) => s.split([' ', ',']).filter(|x| !x.is_empty()).map(str::to_owned).collect(),
        Some(Json::Array(list)) => list.iter().filter_map(Json::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_grant_tenants_and_roles() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, r#"{"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}"#).unwrap();
        let cfg = OidcConfig {
            issuer_url: "https://idp".into(),
            audience: "spoor".into(),
            jwks_file: jwks,
            roles_claim: "realm_access.roles".into(),
            ..OidcConfig::default()
        };
        let oidc = Oidc::open(&cfg).unwrap();
        let claims: Claims = serde_json::from_str(
            r#"{"sub": "alice", "tenants": "a, b ../x", "realm_access": {"roles": ["read", "offline_access", "read"]}}"#,
        )
        .unwrap();
        let id = oidc.identity(&claims);
        assert_eq!(
            (id.name.as_str(), id.tenants.clone(), id.roles.clone()),
            ("oidc:alice", vec!["a".to_string(), "b".into()], vec![Role::Read])
        );
        for bad in [
            OidcConfig { audience: String::new(), ..cfg.clone() },
            OidcConfig { jwks_url: "https://idp/keys".into(), ..cfg.clone() },
            OidcConfig { jwks_file: PathBuf::new(), ..cfg.clone() },
        ] {
            assert!(Oidc::open(&bad).is_err());
        }
    }
}
