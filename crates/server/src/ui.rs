//! Spoor's own web UI, embedded in the binary so that using it needs no Node.js, no build step
//! and no internet: plain ES modules and CSS from `crates/server/ui/`, served on the API port.
//!
//! - The page routes (`/`, `/trace/{id}`, `/compare/{a}/{b}`, `/services`, `/services/{name}`,
//!   `/delivery`) all answer the one HTML shell; the browser-side router picks the page. The shell is
//!   `no-cache`, so a new binary's page is seen at once.
//! - Assets live under `/ui/assets/{version}/…`, where `version` is a digest of every embedded
//!   asset: the URL changes whenever any asset does, so they are cached as immutable. An asset
//!   asked for under another version (a page loaded before an upgrade) is still served, but
//!   revalidated (`no-cache` + `ETag`), never cached as if it were that version's.
//! - `/ui/config.json`: what the page needs to know before it has a token (the trace-to-logs
//!   template, whether auth and multi-tenancy are on). It holds no secret: the guard leaves the
//!   UI's routes open, because the browser has no token until the page asks for one.
//! - `/api/tenants` (not part of the UI switch: any client may ask): the caller's tenants, from
//!   the identity the guard resolved, for the page's tenant picker.
//!
//! docs/ui.md describes the pages and their algorithms.

use std::sync::{Arc, LazyLock};

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::tokens::Identity;

/// The `ui:` section of the server configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the web UI on the API port.
    pub enabled: bool,
    /// A link from a trace or span to its logs: `${traceId}` and `${spanId}` are replaced by the
    /// hex IDs (`${spanId}` by "" for the trace's link). Empty: no link.
    pub trace_to_logs_url: String,
}

impl Default for UiConfig {
    fn default() -> UiConfig {
        UiConfig { enabled: true, trace_to_logs_url: String::new() }
    }
}

impl UiConfig {
    /// A template must be a link a browser follows to a log viewer: http(s), absolute or
    /// relative to the page, never `javascript:`.
    pub fn validate(&self) -> Result<(), String> {
        let t = self.trace_to_logs_url.trim();
        if t.is_empty() || t.starts_with('/') {
            return Ok(());
        }
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Ok(())
        } else {
            Err(format!("must be an http(s) URL or a path starting with /, not {t:?}"))
        }
    }
}

/// What the UI's handlers share.
pub struct Ui {
    pub config: UiConfig,
    pub auth: bool,
    pub multitenancy: bool,
}

/// The page's routes (when `ui.enabled`) and `/api/tenants` (always).
pub fn router(ui: Ui) -> axum::Router {
    let enabled = ui.config.enabled;
    let ui = Arc::new(ui);
    let tenants = axum::Router::new().route("/api/tenants", get(tenants)).with_state(ui.clone());
    if !enabled {
        return tenants;
    }
    axum::Router::new()
        .route("/", get(shell))
        .route("/trace/{id}", get(shell))
        .route("/compare/{a}/{b}", get(shell))
        .route("/services", get(shell))
        .route("/services/{name}", get(shell))
        .route("/delivery", get(shell))
        .route("/ui/config.json", get(config))
        .route("/ui/assets/{version}/{*path}", get(asset))
        .with_state(ui)
        .merge(tenants)
}

/// Whether the guard lets `path` through without credentials: the shell, its assets and its
/// configuration, for GET and HEAD only. Nothing else is routed under these prefixes (the
/// Jaeger API's `services` lives under `/api/` and `/jaeger/api/`).
pub fn is_open(path: &str) -> bool {
    path == "/"
        || path == "/services"
        || path == "/delivery"
        || ["/trace/", "/compare/", "/services/", "/ui/"].iter().any(|p| path.starts_with(p))
}

/// One embedded file: its path under `ui/` and its bytes.
type Asset = (&'static str, &'static [u8]);

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)) as &[u8])),*]
    };
}

/// Every asset the shell may load. A file missing here is a 404 in the browser, and a file
/// listed but missing on disk fails the build.
static ASSETS: &[Asset] = assets!(
    "app.css",
    "js/app.js",
    "js/session.js",
    "js/metrics.js",
    "js/api.js",
    "js/dom.js",
    "js/format.js",
    "js/model.js",
    "js/critical.js",
    "js/compare.js",
    "js/traceql.js",
    "js/editor.js",
    "js/flame.js",
    "js/delivery.js",
    "js/pages/search.js",
    "js/pages/trace.js",
    "js/pages/compare.js",
    "js/pages/services.js",
    "js/pages/health.js",
    "js/pages/delivery.js",
    "favicon.svg",
);

const SHELL: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/index.html"));

/// The digest of every asset, names included: the assets' URL version.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for (name, bytes) in ASSETS {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex(&h.finalize()[..8])
});

/// The shell with its asset URLs pointing at this build's version.
static PAGE: LazyLock<String> = LazyLock::new(|| SHELL.replace("{{ASSETS}}", &format!("/ui/assets/{}", *VERSION)));

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn shell() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page loads only its own scripts and styles, and talks only to its own origin.
            // Its styles are set through the CSSOM, which needs no 'unsafe-inline'.
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

async fn asset(Path((version, path)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let Some((name, bytes)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return (StatusCode::NOT_FOUND, format!("no UI asset {path:?}\n")).into_response();
    };
    let etag = format!("\"{}-{}\"", *VERSION, hex(&Sha256::digest(name.as_bytes())[..4]));
    let cache = if version == *VERSION { "public, max-age=31536000, immutable" } else { "no-cache" };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (*bytes).into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

async fn config(State(ui): State<Arc<Ui>>) -> Response {
    let body = json!({
        "traceToLogsUrl": ui.config.trace_to_logs_url,
        "auth": ui.auth,
        "multitenancy": ui.multitenancy,
    });
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(body)).into_response()
}

/// The caller's tenants: with auth, those of the token the guard resolved (`allTenants` for a
/// token that may use any, whose list is then not known here); without, any tenant goes.
async fn tenants(State(ui): State<Arc<Ui>>, id: Option<Extension<Arc<Identity>>>) -> Response {
    let body = match id {
        Some(Extension(id)) => json!({
            "auth": true,
            "multitenancy": ui.multitenancy,
            "name": id.name,
            "tenants": id.tenants,
            "allTenants": id.all_tenants,
        }),
        None => json!({ "auth": ui.auth, "multitenancy": ui.multitenancy, "tenants": [], "allTenants": true }),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_links() {
        let t = |s: &str| UiConfig { trace_to_logs_url: s.into(), ..UiConfig::default() }.validate();
        assert!(t("").is_ok());
        assert!(t("https://logs.example/explore?q=trace_id%3D${traceId}").is_ok());
        assert!(t("/logs?trace=${traceId}&span=${spanId}").is_ok());
        assert!(t("javascript:alert(1)").unwrap_err().contains("http(s)"));
    }

    #[test]
    fn open_paths_are_the_uis_only() {
        let open =
            ["/", "/trace/abc", "/compare/a/b", "/services", "/services/shop", "/delivery", "/ui/assets/x/app.css"];
        for p in open {
            assert!(is_open(p), "{p}");
        }
        // The delivery page's data (`/api/dora`) is guarded like any other API route.
        let closed = [
            "/api/search",
            "/api/services",
            "/jaeger/api/services",
            "/api/dora",
            "/delivery/x",
            "/deliveryx",
            "/flush",
            "/metrics",
            "/tracex",
            "/uix",
        ];
        for p in closed {
            assert!(!is_open(p), "{p}");
        }
    }

    #[test]
    fn every_asset_has_a_type() {
        for (name, bytes) in ASSETS {
            assert_ne!(content_type(name), "application/octet-stream", "{name}");
            assert!(!bytes.is_empty(), "{name}");
        }
        assert!(PAGE.contains(&format!("/ui/assets/{}/js/app.js", *VERSION)));
    }
}
