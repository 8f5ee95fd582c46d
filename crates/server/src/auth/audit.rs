//! The audit log: one JSON line per query or admin action on the API port once auth is on
//! (refusals included), to a file or stderr. It records who (the token's name, never the
//! token), the tenant, the route, the query text, how many results, and the status.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::json;

/// Put in a response's extensions by a query handler, so the audit line can say how much it
/// returned without the guard decoding the body.
#[derive(Clone, Copy, Debug)]
pub struct ResultCount(pub usize);

/// One audited request.
pub struct Event<'a> {
    pub who: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    /// The TraceQL or tag query, when the request has one.
    pub query: Option<&'a str>,
    pub results: Option<usize>,
    pub status: u16,
    /// Why it was refused, for 401 and 403.
    pub reason: Option<&'a str>,
}

pub struct Audit {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Audit {
    /// `-`: stderr; anything else: a file, appended to (created when missing).
    pub fn open(target: &str) -> Result<Audit, String> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stderr())
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(target))
                .map_err(|e| format!("cannot open auth.audit_log {target}: {e}"))?;
            Box::new(file)
        };
        Ok(Audit { out: Mutex::new(out) })
    }

    pub fn record(&self, e: &Event<'_>) {
        let line = json!({
            "time": spoor_model::time::format_rfc3339(spoor_model::time::now_nanos()),
            "audit": true,
            "who": e.who,
            "tenant": e.tenant,
            "method": e.method,
            "route": e.path,
            "query": e.query,
            "results": e.results,
            "status": e.status,
            "reason": e.reason,
        });
        let mut text = line.to_string();
        text.push('\n');
        // One write per line keeps lines whole when several requests finish at once; a failed
        // write must not fail the request it records.
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            tracing::warn!(error = %err, "cannot write the audit log");
        }
    }
}
