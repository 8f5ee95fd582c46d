//! The guard in front of every router once `auth.enabled`: it finds the caller from the
//! `Authorization` header (or gRPC metadata), checks the role the route needs and the tenants
//! the request names, and only then lets the request through. It runs before any handler, so a
//! refusal never reads (let alone decodes) a body.
//!
//! The tenant comes from the token: a token bound to one tenant needs no `X-Scope-OrgID`, and a
//! header naming a tenant outside the token's set (or a federation `a|b` partly outside it) is
//! refused. The guard writes the resolved tenant into `X-Scope-OrgID`, so every handler below
//! it keeps reading the tenant where it always did and cannot see anything else.
//!
//! 401 / UNAUTHENTICATED: no credentials, or a token the tokens file does not know. 403 /
//! PERMISSION_DENIED: a known token without the role or the tenant. Messages name the token's
//! entry and the missing right, never the token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::auth::AuthConfig;
use crate::auth::audit::{Audit, Event, ResultCount};
use crate::auth::jwt;
use crate::auth::mask::{Mask, Masking};
use crate::auth::oidc::Oidc;
use crate::auth::spans::{SpanFilter, SpanFiltering};
use crate::auth::tokens::{Identity, Role, Tokens};
use crate::error::{Error, StartupError};
use crate::ingest::body::Format;
use crate::ingest::{receive, tenant};
use crate::metrics::{Metrics, names};
use crate::tls::peer::PeerNames;

/// Which listener a guard stands in front of: it decides the roles and how a refusal is said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The query API port: Tempo API, `/flush`, `/metrics`; plain-text refusals; audited.
    Api,
    /// OTLP/HTTP: refusals as an OTLP `Status` in the request's format.
    OtlpHttp,
    /// OTLP/gRPC: trailers-only refusals.
    OtlpGrpc,
    /// Zipkin's HTTP receiver: plain-text refusals.
    Zipkin,
    /// Jaeger's Thrift-over-HTTP receiver: plain-text refusals.
    JaegerThrift,
    /// The extra gRPC port for Jaeger clients (`jaeger.grpc_listen`): trailers-only refusals.
    JaegerGrpc,
}

impl Surface {
    fn label(self) -> &'static str {
        match self {
            Surface::Api => "api",
            Surface::OtlpHttp => "otlp_http",
            Surface::OtlpGrpc => "otlp_grpc",
            Surface::Zipkin => "zipkin",
            Surface::JaegerThrift => "jaeger_thrift",
            Surface::JaegerGrpc => "jaeger_grpc",
        }
    }
}

/// How much of a refused OTLP/HTTP body is read so the client hears the refusal: an SDK's
/// batch fits, a flood does not.
const DISCARD_AT_MOST_BYTES: usize = 1 << 20;
const DISCARD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(2);

/// What every guard of a process shares.
pub struct Auth {
    pub tokens: Arc<Tokens>,
    /// With `auth.oidc`: JWTs the tokens file does not know are verified here.
    pub oidc: Option<Arc<Oidc>>,
    audit: Option<Audit>,
    multitenancy: bool,
    protect_metrics: bool,
    /// How much of a refused OTLP/HTTP body is read and thrown away, so that an HTTP/1 client
    /// still writing hears the refusal rather than a reset.
    discard_limit: usize,
    metrics: Arc<Metrics>,
}

impl Auth {
    /// `None` when auth is off. The tokens file and the audit log must open, or the process
    /// does not start.
    pub fn open(
        cfg: &AuthConfig,
        multitenancy: bool,
        discard_limit: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Auth>>, StartupError> {
        if !cfg.enabled {
            return Ok(None);
        }
        if cfg.tokens_file.as_os_str().is_empty() && !cfg.oidc.enabled() {
            return Err(StartupError::new(
                "auth.enabled is true but auth.tokens_file is not set (nor auth.oidc.issuer_url)",
            ));
        }
        let tokens = Tokens::open(&cfg.tokens_file).map_err(StartupError::new)?;
        let oidc = if cfg.oidc.enabled() { Some(Oidc::open(&cfg.oidc).map_err(StartupError::new)?) } else { None };
        let audit = match cfg.audit_log.trim() {
            "" => None,
            target => Some(Audit::open(target).map_err(StartupError::new)?),
        };
        let protect_metrics = cfg.protect_metrics;
        Ok(Some(Arc::new(Auth { tokens, oidc, audit, multitenancy, protect_metrics, discard_limit, metrics })))
    }
}

impl Auth {
    /// Keeps the tokens file and the OIDC key set current until `stop` turns true.
    pub fn watch(&self, stop: &tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(self.tokens.clone().watch(stop.clone()));
        if let Some(o) = &self.oidc {
            tokio::spawn(o.clone().watch(stop.clone()));
        }
    }
}

/// `router` behind the guard for `surface`, or as it is when auth is off.
pub fn protect(auth: Option<&Arc<Auth>>, surface: Surface, router: axum::Router) -> axum::Router {
    match auth {
        Some(a) => router.layer(axum::middleware::from_fn_with_state((a.clone(), surface), check)),
        None => router,
    }
}

/// What a route asks of its caller.
enum Need {
    Open,
    Role(Role),
    /// `/metrics/generated`: `read`, for the `?tenant=` asked for or, without one, every tenant.
    Generated,
    /// `/api/tenants`: any token with `read`, whatever its tenants, mask or span filter: it
    /// answers only what the token itself may use.
    Identity,
}

fn need(auth: &Auth, surface: Surface, method: &Method, path: &str) -> Need {
    if surface != Surface::Api {
        return Need::Role(Role::Ingest);
    }
    // Open routes only by their exact spelling; every other rule also catches percent-encoded
    // spellings, in case a router ever decodes before matching.
    let open = match path {
        "/ready" | "/api/echo" | "/api/status/buildinfo" => true,
        "/metrics" => !auth.protect_metrics,
        // The web UI's page, assets and configuration: the browser has no token until the page
        // asks for one. Its API calls are guarded like any other.
        p => (method == Method::GET || method == Method::HEAD) && crate::ui::is_open(p),
    };
    if open {
        return Need::Open;
    }
    match crate::http::percent_decode(path, false).as_str() {
        "/metrics" | "/flush" => Need::Role(Role::Admin),
        // gRPC calls are POSTs; the streaming querier's only read.
        p if p.starts_with(crate::tempo::stream::SERVICE) => Need::Role(Role::Read),
        // Whatever changes state is admin's, including routes added later.
        _ if method != Method::GET && method != Method::HEAD => Need::Role(Role::Admin),
        "/metrics/generated" => Need::Generated,
        "/api/tenants" => Need::Identity,
        _ => Need::Role(Role::Read),
    }
}

async fn check(State((auth, surface)): State<(Arc<Auth>, Surface)>, mut req: Request, next: Next) -> Response {
    let need = need(&auth, surface, req.method(), req.uri().path());
    if matches!(need, Need::Open) {
        return next.run(req).await;
    }
    let audit = auth.audit.as_ref().filter(|_| surface == Surface::Api);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    let decided = decide(&auth, &need, &mut req, &raw_query).await;
    let record = |who: Option<&str>, tenant: Option<&str>, status: StatusCode, results, reason: Option<&str>| {
        if let Some(a) = audit {
            let query = param(&raw_query, "q").or_else(|| param(&raw_query, "query"));
            a.record(&Event {
                who,
                tenant,
                method: method.as_str(),
                path: &path,
                query: query.as_deref(),
                results,
                status: status.as_u16(),
                reason,
            });
        }
    };
    match decided {
        Ok((id, tenants)) => {
            req.extensions_mut().insert(id.clone());
            let resp = next.run(req).await;
            let results = resp.extensions().get::<ResultCount>().map(|c| c.0);
            record(Some(&id.name), tenants.as_deref(), resp.status(), results, None);
            resp
        }
        Err((e, id)) => {
            let labels = [("listener", surface.label()), ("code", e.kind().label())];
            auth.metrics.inc(names::AUTH_REFUSED_TOTAL, &labels, 1.0);
            record(id.as_ref().map(|i| i.name.as_str()), None, e.http_status(), None, Some(e.message()));
            refuse(&auth, surface, e, req).await
        }
    }
}

type Refusal = (Error, Option<Arc<Identity>>);

/// The caller and the tenants the request covers (`None` for admin routes, which are not a
/// tenant's), or why not.
async fn decide(
    auth: &Auth,
    need: &Need,
    req: &mut Request,
    raw_query: &str,
) -> Result<(Arc<Identity>, Option<String>), Refusal> {
    let peer = req.extensions().get::<PeerNames>().cloned();
    let id = match (credentials(req.headers()), peer) {
        // Without a token, a verified client certificate may name an entry (mTLS identity).
        (Err(_), Some(PeerNames(names))) if !req.headers().contains_key(header::AUTHORIZATION) => {
            auth.tokens.lookup_cert(&names).ok_or_else(|| {
                let msg = format!(
                    "the client certificate ({}) names no entry of the tokens file, and the request has no token",
                    names.join(", ")
                );
                (Error::unauthenticated(msg), None)
            })?
        }
        (Err(e), _) => return Err((e, None)),
        (Ok(token), _) => match (auth.tokens.lookup(&token), &auth.oidc) {
            (Some(id), _) => id,
            (None, Some(oidc)) if jwt::looks_like_jwt(&token) => {
                Arc::new(oidc.identify(&token).await.map_err(|m| (Error::unauthenticated(m), None))?)
            }
            (None, _) => {
                return Err((Error::unauthenticated("unknown token: no entry of the tokens file matches it"), None));
            }
        },
    };
    let role = match need {
        Need::Role(r) => *r,
        _ => Role::Read,
    };
    let route = req.uri().path().to_owned();
    if !id.has_role(role) {
        let msg = format!("token {:?} does not have the {} role that {} needs", id.name, role.name(), route);
        return Err((Error::forbidden(msg), Some(id)));
    }
    if let (Some(mask), Need::Role(Role::Read) | Need::Generated) = (&id.mask, need) {
        masked_request(mask, req.uri().path(), raw_query).map_err(|e| (e, Some(id.clone())))?;
        req.extensions_mut().insert(Masking(mask.clone()));
    }
    if let (Some(filter), Need::Role(Role::Read) | Need::Generated) = (&id.spans, need) {
        filtered_request(filter, req, raw_query).map_err(|e| (e, Some(id.clone())))?;
        req.extensions_mut().insert(SpanFiltering(filter.clone()));
    }
    let tenants = match need {
        Need::Role(Role::Admin) | Need::Identity => None,
        Need::Generated => Some(generated_scope(&id, raw_query).map_err(|e| (e, Some(id.clone())))?),
        _ => Some(scope(auth, req.headers_mut(), &id).map_err(|e| (e, Some(id.clone())))?),
    };
    Ok((id, tenants))
}

/// The read routes that apply a token's mask, and the checks that keep queries from probing
/// masked keys. Any other read route is refused to a masking token: new routes stay closed to
/// it until they learn to mask.
fn masked_request(mask: &Mask, path: &str, raw_query: &str) -> Result<(), Error> {
    let path = crate::http::percent_decode(path, false);
    let refuse = |why: String| Err(Error::forbidden(why));
    let all = |name: &str| params(raw_query, name);
    for text in all("q").into_iter().chain(all("query")) {
        if let Err(why) = mask.check_query(&text) {
            return refuse(why);
        }
    }
    if path == "/api/search" {
        return if legacy_search(raw_query) {
            refuse("legacy tag search is not available to a token with mask; use q".into())
        } else {
            Ok(())
        };
    }
    if ["/api/search/tags", "/api/v2/search/tags", "/api/metrics/query_range", "/api/metrics/query"]
        .contains(&path.as_str())
        || path.starts_with("/api/traces/")
        || path.starts_with("/api/v2/traces/")
    {
        return Ok(());
    }
    for prefix in ["/api/search/tag/", "/api/v2/search/tag/"] {
        if let Some(tag) = path.strip_prefix(prefix).and_then(|r| r.strip_suffix("/values")) {
            return mask.check_tag(tag).or_else(refuse);
        }
    }
    if let Some(rest) = path.strip_prefix("/jaeger/api/").or_else(|| path.strip_prefix("/api/")) {
        return masked_jaeger(mask, rest, raw_query);
    }
    refuse(format!("{path} is not available to a token with mask"))
}

/// Jaeger's routes for a masking token. A trace by ID masks what it renders. Everything else
/// names or lists services (the filters `service=`, the lists, the edges, the series labels),
/// so it needs `service.name` readable; a search's `tags` name keys, each checked as a tag.
fn masked_jaeger(mask: &Mask, rest: &str, raw_query: &str) -> Result<(), Error> {
    let refuse = |why: String| Err(Error::forbidden(why));
    let jaeger = rest.starts_with("traces")
        || rest.starts_with("services")
        || ["operations", "dependencies"].contains(&rest)
        || rest.starts_with("metrics/") && !["metrics/query", "metrics/query_range"].contains(&rest);
    if !jaeger {
        return refuse(format!("/api/{rest} is not available to a token with mask"));
    }
    if let Some(id) = rest.strip_prefix("traces/")
        && !id.contains('/')
    {
        return Ok(());
    }
    if let Err(why) = mask.check_tag("resource.service.name") {
        return refuse(format!("{why}; Jaeger's API names services in every answer"));
    }
    for tags in params(raw_query, "tags") {
        let keys: Vec<String> = match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&tags) {
            Ok(map) => map.keys().cloned().collect(),
            Err(_) => tags.split_whitespace().filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned())).collect(),
        };
        for k in keys {
            mask.check_tag(&k).or_else(refuse)?;
        }
    }
    Ok(())
}

/// The read routes that honour a token's span filter. Searches and metrics queries run with
/// the filter folded into every spanset (the request's `q`/`query` is rewritten here, so the
/// handlers cannot forget it); tag routes and traces apply it themselves. Any other read route
/// is refused: new routes stay closed to a filtered token until they learn to filter.
fn filtered_request(filter: &SpanFilter, req: &mut Request, raw_query: &str) -> Result<(), Error> {
    let path = crate::http::percent_decode(req.uri().path(), false);
    let refuse = |why: String| Err(Error::forbidden(why));
    let searches = path == "/api/search";
    if searches && legacy_search(raw_query) {
        return refuse("legacy tag search is not available to a token with spans; use q".into());
    }
    if searches || ["/api/metrics/query_range", "/api/metrics/query"].contains(&path.as_str()) {
        let mut pairs: Vec<String> = Vec::new();
        let mut asked = false;
        for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let name = crate::http::percent_decode(k, true);
            if name == "q" || name == "query" {
                asked = true;
                let text = crate::http::percent_decode(v, true);
                // An empty `q` is a search for everything: the filter alone.
                let restricted = filter.restrict(&text).map_err(Error::forbidden)?;
                pairs.push(format!("{k}={}", query_encode(&restricted)));
            } else {
                pairs.push(pair.to_owned());
            }
        }
        if searches && !asked {
            pairs.push(format!("q={}", query_encode(&filter.restrict("").map_err(Error::forbidden)?)));
        }
        let pq = format!("{}?{}", req.uri().path(), pairs.join("&"));
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query =
            Some(pq.parse().map_err(|_| Error::bad_request("the request's query string cannot be rewritten"))?);
        *req.uri_mut() = axum::http::Uri::from_parts(parts)
            .map_err(|_| Error::bad_request("the request's URI cannot be rewritten"))?;
        return Ok(());
    }
    if ["/api/search/tags", "/api/v2/search/tags"].contains(&path.as_str())
        || path.starts_with("/api/traces/")
        || path.starts_with("/api/v2/traces/")
    {
        return check_tag_q(filter, raw_query);
    }
    for prefix in ["/api/search/tag/", "/api/v2/search/tag/"] {
        if let Some(tag) = path.strip_prefix(prefix).and_then(|r| r.strip_suffix("/values")) {
            // Values of trace:rootService would list the services of hidden root spans.
            if let Ok(attrs) = spoor_traceql::referenced(tag)
                && attrs.iter().any(|a| {
                    matches!(
                        a,
                        spoor_traceql::ast::Attribute::Intrinsic(
                            spoor_traceql::ast::Intrinsic::TraceRootName
                                | spoor_traceql::ast::Intrinsic::TraceRootService
                        )
                    )
                })
            {
                return refuse(format!("tag {tag:?} may describe spans this token may not see"));
            }
            return check_tag_q(filter, raw_query);
        }
    }
    refuse(format!("{path} is not available to a token with spans"))
}

/// The tag routes' `q` is parsed leniently by the handler: check what it names, when it lexes.
fn check_tag_q(filter: &SpanFilter, raw_query: &str) -> Result<(), Error> {
    for text in params(raw_query, "q") {
        if spoor_traceql::referenced(&text).is_ok() {
            filter.check_query(&text).map_err(Error::forbidden)?;
        }
    }
    Ok(())
}

/// Whether a search uses Tempo's legacy tag form (`tags=k=v`, or one parameter per tag),
/// which names keys outside TraceQL.
fn legacy_search(raw_query: &str) -> bool {
    raw_query.split('&').filter(|p| !p.is_empty()).any(|p| {
        let name = crate::http::percent_decode(p.split('=').next().unwrap_or(""), true);
        !SEARCH_PARAMS.contains(&name.as_str()) || (name == "tags" && !p.ends_with('='))
    })
}

/// Percent-encodes a query-string value (everything but unreserved characters).
fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parameters `/api/search` reads as such; any other is a legacy tag.
const SEARCH_PARAMS: [&str; 9] = ["q", "tags", "minDuration", "maxDuration", "limit", "spss", "start", "end", "query"];

/// The tenants a request covers, checked against the token and written into `X-Scope-OrgID`.
fn scope(auth: &Auth, headers: &mut HeaderMap, id: &Identity) -> Result<String, Error> {
    if !auth.multitenancy {
        if !id.may_use(tenant::SINGLE_TENANT) {
            return Err(Error::forbidden(format!(
                "token {:?} may not use tenant {:?} (multi-tenancy is off, so every request is that tenant's)",
                id.name,
                tenant::SINGLE_TENANT
            )));
        }
        return Ok(tenant::SINGLE_TENANT.to_owned());
    }
    let asked: Vec<String> = match headers.get(tenant::HEADER) {
        Some(v) => {
            let v = v.to_str().map_err(|_| Error::bad_request("invalid tenant ID: X-Scope-OrgID is not ASCII"))?;
            v.trim().split('|').map(str::to_owned).collect()
        }
        None => match id.sole_tenant() {
            Some(t) => vec![t.to_owned()],
            None => {
                return Err(Error::bad_request(format!(
                    "token {:?} may use several tenants: name one with the X-Scope-OrgID header",
                    id.name
                )));
            }
        },
    };
    for t in &asked {
        tenant::validate(t)?;
        if !id.may_use(t) {
            return Err(Error::forbidden(format!("token {:?} may not use tenant {t:?}", id.name)));
        }
    }
    let value = asked.join("|");
    // Validated above: only visible ASCII.
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(tenant::HEADER, v);
    }
    Ok(value)
}

/// `/metrics/generated` spans tenants: one named by `?tenant=`, or all of them.
fn generated_scope(id: &Identity, raw_query: &str) -> Result<String, Error> {
    // The handler keeps one of repeated parameters; which one must not matter.
    let named = raw_query
        .split('&')
        .filter(|p| crate::http::percent_decode(p.split('=').next().unwrap_or(""), true) == "tenant");
    if named.count() > 1 {
        return Err(Error::bad_request("tenant is given more than once"));
    }
    match param(raw_query, "tenant").filter(|t| !t.is_empty()) {
        Some(t) if id.may_use(&t) => Ok(t),
        Some(t) => Err(Error::forbidden(format!("token {:?} may not use tenant {t:?}", id.name))),
        None if id.all_tenants => Ok("*".into()),
        None => {
            Err(Error::forbidden(format!("token {:?} does not cover every tenant: ask for one with ?tenant=", id.name)))
        }
    }
}

/// The token from `Authorization: Bearer <token>`, or the password of `Basic`.
fn credentials(headers: &HeaderMap) -> Result<String, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Error::unauthenticated(
            "missing credentials: send Authorization: Bearer <token> (or basic auth with the token as password)",
        ));
    };
    let value = value.to_str().map_err(|_| Error::unauthenticated("the Authorization header is not ASCII"))?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::unauthenticated("basic credentials are not base64 of user:token"))?;
        let (_user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Error::unauthenticated("basic credentials are not base64 of user:token"))?;
        password.to_owned()
    } else {
        // The scheme is not echoed: a client sending the bare token would see it in the reply.
        return Err(Error::unauthenticated("unsupported Authorization scheme: use Bearer <token> or Basic"));
    };
    if token.is_empty() {
        return Err(Error::unauthenticated("empty token in the Authorization header"));
    }
    Ok(token)
}

/// Every value of a query-string parameter, decoded.
fn params(raw: &str, name: &str) -> Vec<String> {
    raw.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (crate::http::percent_decode(k, true) == name).then(|| crate::http::percent_decode(v, true))
        })
        .collect()
}

/// One query-string parameter, decoded.
fn param(raw: &str, name: &str) -> Option<String> {
    raw.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (crate::http::percent_decode(k, true) == name).then(|| crate::http::percent_decode(v, true))
    })
}

async fn refuse(auth: &Auth, surface: Surface, e: Error, req: Request) -> Response {
    // A script's request (fetch, as the web UI's) hears no Basic challenge: a browser would
    // answer it with its own login dialog, over the page that asks for a token itself.
    let from_script = req.headers().get("sec-fetch-dest").is_some_and(|v| v.as_bytes() == b"empty");
    let mut resp = match surface {
        Surface::OtlpGrpc | Surface::JaegerGrpc => return receive::grpc_error(&e),
        Surface::Zipkin | Surface::JaegerThrift => {
            let limit = auth.discard_limit.min(DISCARD_AT_MOST_BYTES);
            let _ = tokio::time::timeout(DISCARD_AT_MOST, receive::discard(req.into_body(), limit)).await;
            receive::text_error(&e)
        }
        Surface::OtlpHttp => {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
            // Bounded in bytes and time: an unauthenticated client must not make the server
            // read megabytes, or hold the task by sending its body slowly. Past the bound the
            // connection is closed after the reply.
            let limit = auth.discard_limit.min(DISCARD_AT_MOST_BYTES);
            let _ = tokio::time::timeout(DISCARD_AT_MOST, receive::discard(req.into_body(), limit)).await;
            receive::http_error(&e, if json { Format::Json } else { Format::Protobuf })
        }
        Surface::Api => (e.http_status(), format!("{e}\n")).into_response(),
    };
    if e.http_status() == StatusCode::UNAUTHORIZED {
        let h = resp.headers_mut();
        h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"spoor\""));
        if !from_script {
            h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"spoor\""));
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_and_basic_and_never_echoes() {
        let mut h = HeaderMap::new();
        assert!(credentials(&h).unwrap_err().message().contains("missing credentials"));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(credentials(&h).unwrap(), "abc");
        let basic = base64::engine::general_purpose::STANDARD.encode("grafana:s3cret:x");
        h.insert(header::AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        assert_eq!(credentials(&h).unwrap(), "s3cret:x");
        h.insert(header::AUTHORIZATION, "hunter2".parse().unwrap());
        let e = credentials(&h).unwrap_err();
        assert!(!e.message().contains("hunter2") && e.kind() == crate::error::Kind::Unauthenticated);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(credentials(&h).unwrap_err().message().contains("empty token"));
    }

    #[test]
    fn routes_need_their_roles_whatever_the_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("t.yaml");
        std::fs::write(&tokens, "[]").unwrap();
        let cfg = AuthConfig { enabled: true, tokens_file: tokens, audit_log: String::new(), ..AuthConfig::default() };
        let auth = Auth::open(&cfg, true, 0, Arc::new(Metrics::default())).unwrap().unwrap();
        let role = |method: Method, path: &str| match need(&auth, Surface::Api, &method, path) {
            Need::Open => "open",
            Need::Role(r) => r.name(),
            Need::Generated => "generated",
            Need::Identity => "identity",
        };
        assert_eq!(role(Method::GET, "/ready"), "open");
        assert_eq!(role(Method::GET, "/metrics"), "open");
        assert_eq!(role(Method::GET, "/flush"), "admin");
        assert_eq!(role(Method::GET, "/%66lush"), "admin");
        assert_eq!(role(Method::HEAD, "/flush"), "admin");
        assert_eq!(role(Method::POST, "/api/search"), "admin");
        assert_eq!(role(Method::GET, "/metrics/%67enerated"), "generated");
        assert_eq!(role(Method::GET, "/api/search"), "read");
        assert_eq!(role(Method::GET, "/%72eady"), "read");
        // The UI's page and assets are open to GET only; its data comes through guarded routes.
        assert_eq!(role(Method::GET, "/"), "open");
        assert_eq!(role(Method::GET, "/trace/0af7651916cd43dd8448eb211c80319c"), "open");
        assert_eq!(role(Method::HEAD, "/ui/assets/v/js/app.js"), "open");
        assert_eq!(role(Method::GET, "/delivery"), "open");
        assert_eq!(role(Method::GET, "/api/dora"), "read");
        assert_eq!(role(Method::GET, "/api/dora/deployments"), "read");
        assert_eq!(role(Method::POST, "/"), "admin");
        assert_eq!(role(Method::GET, "/api/services"), "read");
        assert_eq!(role(Method::GET, "/api/tenants"), "identity");
        assert!(matches!(need(&auth, Surface::OtlpGrpc, &Method::POST, "/ready"), Need::Role(Role::Ingest)));
    }

    #[test]
    fn jaeger_routes_mask_or_refuse() {
        let mask = |e: &[&str]| Mask::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let email = mask(&["span.user.email"]);
        let ok = |m: &Mask, path: &str, q: &str| masked_request(m, path, q).is_ok();
        assert!(ok(&email, "/jaeger/api/traces/abc", ""));
        assert!(ok(&email, "/jaeger/api/services", ""));
        assert!(ok(&email, "/api/services/shop/operations", ""));
        assert!(ok(&email, "/jaeger/api/traces", "service=shop&tags=%7B%22http.route%22%3A%22%2Fa%22%7D"));
        assert!(!ok(&email, "/jaeger/api/traces", "service=shop&tags=%7B%22user.email%22%3A%22a%22%7D"));
        assert!(!ok(&email, "/jaeger/api/traces", "service=shop&tags=user.email%3Da"));
        assert!(ok(&email, "/api/metrics/calls", "service=shop"));
        assert!(!ok(&email, "/api/other", ""));
        let service = mask(&["resource.service.name"]);
        assert!(ok(&service, "/jaeger/api/traces/abc", ""));
        for path in ["/jaeger/api/services", "/jaeger/api/traces", "/api/dependencies", "/api/metrics/latencies"] {
            assert!(!ok(&service, path, "service=shop"), "{path}");
        }
    }

    #[test]
    fn query_parameters_decode() {
        assert_eq!(param("a=1&q=%7B+.x%3D1+%7D", "q").as_deref(), Some("{ .x=1 }"));
        assert_eq!(param("tenant=b", "q"), None);
    }
}
