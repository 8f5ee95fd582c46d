//! Log lines with trace context on stdout, one per span, as the services would write them: what
//! a log pipeline correlates with traces by `trace_id`.

use std::fmt::Write;

use spoor_model::ids::hex;
use spoor_model::otlp::{Span, any_value};

use super::span::{Kind, Laid};

/// The trace's lines in the order the spans ended.
pub fn lines(laid: &Laid) -> String {
    let mut spans: Vec<&(&str, Span)> = laid.spans.iter().collect();
    spans.sort_by_key(|(_, s)| s.end_time_unix_nano);
    let mut out = String::new();
    for (service, s) in spans {
        let ms = s.end_time_unix_nano / 1_000_000;
        let ts = spoor_model::time::format_rfc3339(ms * 1_000_000);
        // Millisecond precision, always three digits, as log libraries write it.
        let ts = match ts.split_once('.') {
            Some((whole, frac)) => format!("{whole}.{:0<3}Z", frac.trim_end_matches('Z')),
            None => format!("{}.000Z", ts.trim_end_matches('Z')),
        };
        let duration_ms = (s.end_time_unix_nano - s.start_time_unix_nano) as f64 / 1e6;
        let (level, what) = match &s.status {
            Some(st) if st.code == 2 => ("ERROR", format!("failed: {}", st.message)),
            _ if duration_ms > 1000.0 && s.kind != Kind::Internal as i32 => ("WARN", "slow".to_string()),
            _ => ("INFO", "done".to_string()),
        };
        let detail = s
            .attributes
            .iter()
            .find(|kv| {
                kv.key == "db.query.text"
                    || kv.key == "messaging.destination.name"
                    || kv.key == "incident.id"
                    || kv.key == "peer.service"
            })
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(v) => Some(format!(" {}={v:?}", kv.key)),
                _ => None,
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{ts} {level} service={service} trace_id={} span_id={} duration_ms={duration_ms:.1} msg=\"{} {what}\"{detail}",
            hex(&s.trace_id),
            hex(&s.span_id),
            s.name.replace('"', "'"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::span::{MS, Node, lay_out};
    use super::*;

    #[test]
    fn one_line_per_span_with_its_ids() {
        let mut rng = spoor_model::synth::Rng::new(9);
        let mut failing = Node::new("b", Kind::Server, "GET /x").work(3 * MS);
        failing.error = Some("boom".into());
        let root = Node::new("a", Kind::Server, "GET /").work(2 * MS).child(failing);
        let laid = lay_out(&mut rng, &root, 1_765_000_000_123_456_789);
        let text = lines(&laid);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[1].starts_with("2025-12-06T05:46:40.123Z INFO service=a trace_id="), "{text}");
        assert!(lines[0].contains(" ERROR service=b ") && lines[0].contains("msg=\"GET /x failed: boom\""), "{text}");
        assert!(lines[0].contains(&format!("trace_id={}", hex(&laid.trace_id))), "{text}");
    }
}
