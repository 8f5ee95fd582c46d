//! The web UI's routes on the real binary: the page routes answer the HTML shell, the assets
//! come with their content types and cache headers (immutable under this build's version,
//! revalidated under any other, 304 on a matching ETag), the page loads without a token while
//! its data stays guarded, and `/api/tenants` answers the token's tenants. The pages themselves
//! are driven in Chromium by tests/ui/e2e.

mod common;

use common::{Server, request};
use sha2::{Digest, Sha256};

fn header<'a>(r: &'a common::Response, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The asset URLs the shell links to (`href`/`src` under `/ui/assets/`).
fn asset_urls(html: &str) -> Vec<String> {
    html.split(['"', '\'']).filter(|s| s.starts_with("/ui/assets/")).map(str::to_owned).collect()
}

#[tokio::test]
async fn pages_are_the_shell_and_assets_are_cached_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[("SPOOR__UI__TRACE_TO_LOGS_URL", "/logs?t=${traceId}")]);
    let mut shell = String::new();
    for path in [
        "/",
        "/?q=%7B%7D&start=1&end=2",
        "/trace/0af7651916cd43dd8448eb211c80319c",
        "/compare/a1/b2",
        "/services",
        "/services/shop",
        "/delivery",
        "/delivery?environment=production&service=&range=30d",
    ] {
        let r = request("GET", &s.api_url(path), &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8", "{path}");
        assert_eq!(header(&r, "cache-control"), "no-cache", "{path}");
        assert!(r.text().contains("<main id=\"main\""), "{path}");
        shell = r.text();
    }
    let urls = asset_urls(&shell);
    assert!(urls.iter().any(|u| u.ends_with("/js/app.js")) && urls.iter().any(|u| u.ends_with("/app.css")), "{urls:?}");
    let version = urls[0].split('/').nth(3).unwrap().to_owned();
    for (suffix, ty) in [
        ("js/app.js", "text/javascript; charset=utf-8"),
        ("js/pages/trace.js", "text/javascript; charset=utf-8"),
        ("js/pages/delivery.js", "text/javascript; charset=utf-8"),
        ("js/delivery.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let url = s.api_url(&format!("/ui/assets/{version}/{suffix}"));
        let r = request("GET", &url, &[], "").await;
        assert_eq!(r.status, 200, "{suffix}");
        assert_eq!(header(&r, "content-type"), ty, "{suffix}");
        assert_eq!(header(&r, "cache-control"), "public, max-age=31536000, immutable", "{suffix}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../server/ui/").to_owned() + suffix).unwrap();
        assert_eq!(&r.body[..], &on_disk[..], "{suffix} is the embedded file");
        let etag = header(&r, "etag").to_owned();
        assert!(etag.starts_with('"'), "{suffix}: {etag:?}");
        let again = request("GET", &url, &[("if-none-match", &etag)], "").await;
        assert_eq!(again.status, 304, "{suffix}");
        assert!(again.body.is_empty());
        // A page from another build asks for its version: served, but never cached as it.
        let stale = request("GET", &s.api_url(&format!("/ui/assets/0000/{suffix}")), &[], "").await;
        assert_eq!((stale.status, header(&stale, "cache-control")), (200, "no-cache"), "{suffix}");
    }
    // The version is a digest of the assets: this build's app.js is inside it.
    assert_eq!(version.len(), 16);
    let r = request("GET", &s.api_url(&format!("/ui/assets/{version}/js/nope.js")), &[], "").await;
    assert_eq!(r.status, 404);
    let r = request("GET", &s.api_url(&format!("/ui/assets/{version}/../../api/search")), &[], "").await;
    assert_ne!(r.status, 200);

    let cfg = request("GET", &s.api_url("/ui/config.json"), &[], "").await.json();
    assert_eq!(cfg["traceToLogsUrl"], "/logs?t=${traceId}");
    assert_eq!((cfg["auth"].as_bool(), cfg["multitenancy"].as_bool()), (Some(false), Some(false)));
    let who = request("GET", &s.api_url("/api/tenants"), &[], "").await.json();
    assert_eq!(who["allTenants"], true);
    // Jaeger's API keeps its routes next to the UI's.
    assert_eq!(request("GET", &s.api_url("/api/services"), &[], "").await.status, 200);
}

#[tokio::test]
async fn ui_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[("SPOOR__UI__ENABLED", "false")]);
    for path in ["/", "/trace/abc", "/services", "/ui/config.json"] {
        assert_eq!(request("GET", &s.api_url(path), &[], "").await.status, 404, "{path}");
    }
    assert_eq!(request("GET", &s.api_url("/api/tenants"), &[], "").await.status, 200);
}

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn with_auth_the_page_is_open_and_its_data_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{name: two, sha256: {}, tenants: [a, b], roles: [read]}}\n\
             - {{name: ops, sha256: {}, tenants: [\"*\"], roles: [read, admin]}}\n\
             - {{name: masked, sha256: {}, tenants: [a], roles: [read], mask: [span.user.email]}}\n\
             - {{name: writer, sha256: {}, tenants: [a], roles: [ingest]}}\n",
            sha("tok-two"),
            sha("tok-ops"),
            sha("tok-masked"),
            sha("tok-writer")
        ),
    )
    .unwrap();
    let s = Server::start(
        &dir.path().join("d"),
        &[
            ("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true"),
            ("SPOOR__AUTH__ENABLED", "true"),
            ("SPOOR__AUTH__TOKENS_FILE", tokens.to_str().unwrap()),
            ("SPOOR__AUTH__AUDIT_LOG", ""),
        ],
    );
    let shell = request("GET", &s.api_url("/trace/abc"), &[], "").await;
    assert_eq!(shell.status, 200);
    let asset = asset_urls(&shell.text()).into_iter().find(|u| u.ends_with("app.js")).unwrap();
    assert_eq!(request("GET", &s.api_url(&asset), &[], "").await.status, 200);
    let cfg = request("GET", &s.api_url("/ui/config.json"), &[], "").await.json();
    assert_eq!((cfg["auth"].as_bool(), cfg["multitenancy"].as_bool()), (Some(true), Some(true)));
    // Only reads are open: anything else on the same paths needs the admin role.
    assert_eq!(request("POST", &s.api_url("/"), &[], "").await.status, 401);
    // The data the page shows still needs a token.
    assert_eq!(request("GET", &s.api_url("/api/search?q=%7B%7D"), &[], "").await.status, 401);
    // The delivery page too: its shell is open, its DORA figures are not.
    assert_eq!(request("GET", &s.api_url("/delivery?environment=production"), &[], "").await.status, 200);
    assert_eq!(request("GET", &s.api_url("/api/dora"), &[], "").await.status, 401);
    assert_eq!(request("GET", &s.api_url("/api/dora/deployments"), &[], "").await.status, 401);
    let refused = request("GET", &s.api_url("/api/tenants"), &[], "").await;
    assert_eq!(refused.status, 401);
    let challenges = |r: &common::Response| r.headers.get_all("www-authenticate").iter().count();
    assert_eq!(challenges(&refused), 2, "Bearer and Basic");
    // The page's fetches hear only Bearer, so the browser does not pop its own login dialog.
    let fetched = request("GET", &s.api_url("/api/tenants"), &[("sec-fetch-dest", "empty")], "").await;
    assert_eq!((fetched.status, challenges(&fetched)), (401, 1));
    assert_eq!(header(&fetched, "www-authenticate"), "Bearer realm=\"spoor\"");

    // The tenant picker's list: the token's tenants, without naming one first.
    let bearer = |t: &str| format!("Bearer {t}");
    let two = request("GET", &s.api_url("/api/tenants"), &[("authorization", &bearer("tok-two"))], "").await;
    assert_eq!(two.status, 200, "{}", two.text());
    let two = two.json();
    assert_eq!(two["tenants"], serde_json::json!(["a", "b"]));
    assert_eq!((two["allTenants"].as_bool(), two["name"].as_str()), (Some(false), Some("two")));
    let ops = request("GET", &s.api_url("/api/tenants"), &[("authorization", &bearer("tok-ops"))], "").await.json();
    assert_eq!(ops["allTenants"], true);
    // A masking token may still learn its own tenants; a token without read may not.
    let masked = request("GET", &s.api_url("/api/tenants"), &[("authorization", &bearer("tok-masked"))], "").await;
    assert_eq!(masked.json()["tenants"], serde_json::json!(["a"]));
    let writer = request("GET", &s.api_url("/api/tenants"), &[("authorization", &bearer("tok-writer"))], "").await;
    assert_eq!(writer.status, 403, "{}", writer.text());
    // With a token, the page's queries go through for the tenant it picked, and only those.
    let ok = request(
        "GET",
        &s.api_url("/api/search?q=%7B%7D"),
        &[("authorization", &bearer("tok-two")), ("x-scope-orgid", "b")],
        "",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let no = request(
        "GET",
        &s.api_url("/api/search?q=%7B%7D"),
        &[("authorization", &bearer("tok-two")), ("x-scope-orgid", "c")],
        "",
    )
    .await;
    assert_eq!(no.status, 403);
}

#[test]
fn a_trace_to_logs_template_must_be_a_link() {
    let run = |value: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_spoor"))
            .arg("config")
            .env("SPOOR__UI__TRACE_TO_LOGS_URL", value)
            .output()
            .unwrap()
    };
    let bad = run("javascript:alert(document.cookie)");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("ui.trace_to_logs_url") && err.contains("http(s)"), "{err}");
    let good = run("https://logs.example/?q=${traceId}");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(String::from_utf8_lossy(&good.stdout).contains("trace_to_logs_url: https://logs.example/?q=${traceId}"));
}
