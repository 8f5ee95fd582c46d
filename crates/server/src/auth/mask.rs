//! Attribute masking for read tokens (`mask:` in the tokens file): keys in TraceQL form
//! (`span.user.email`, `resource.k8s.namespace.name`, `span.http.request.header.*` for a prefix,
//! `.key` for every scope). Masked values read back as `"[masked]"` in traces; a query that
//! names a masked key anywhere (filter, `by()`, `select()`, tag values) is refused before it
//! runs, so no filter can probe a value that would then be hidden from the answer.

use serde_json::Value as Json;
use spoor_model::otlp::{AnyValue, KeyValue, TracesData, any_value};
use spoor_traceql::ast::{Attribute, Intrinsic, Scope};

pub const MASKED: &str = "[masked]";

/// Put in a request's extensions by the guard when the caller's token masks keys; the read
/// handlers that render attribute values apply it.
#[derive(Clone, Debug)]
pub struct Masking(pub std::sync::Arc<Mask>);

/// Where a masked key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Any,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

#[derive(Debug, PartialEq, Eq)]
struct Rule {
    at: Where,
    key: String,
    /// `key.*`: every key starting with `key.`.
    prefix: bool,
}

/// A token's masked keys.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mask {
    rules: Vec<Rule>,
}

impl Mask {
    /// Parses the `mask:` list; an entry that names no scope or no key is an error.
    pub fn parse(entries: &[String]) -> Result<Mask, String> {
        let mut rules = Vec::new();
        for e in entries {
            let e = e.trim();
            let (scope, rest) = e.split_once('.').ok_or_else(|| {
                format!("mask entry {e:?}: write scope.key (span., resource., event., link., instrumentation., or . for all)")
            })?;
            let at = match scope {
                "" => Where::Any,
                "span" => Where::Span,
                "resource" => Where::Resource,
                "event" => Where::Event,
                "link" => Where::Link,
                "instrumentation" => Where::Instrumentation,
                other => return Err(format!("mask entry {e:?}: unknown scope {other:?}")),
            };
            let (key, prefix) = match rest.strip_suffix(".*") {
                Some(k) => (k, true),
                None => (rest, false),
            };
            if key.is_empty() || key.contains('*') {
                return Err(format!("mask entry {e:?}: a key, optionally followed by .* for a prefix"));
            }
            rules.push(Rule { at, key: key.to_owned(), prefix });
        }
        Ok(Mask { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn hides(&self, at: Where, key: &str) -> bool {
        self.rules.iter().any(|r| {
            let scope = r.at == Where::Any || at == Where::Any || r.at == at;
            let name = if r.prefix {
                key.strip_prefix(r.key.as_str()).is_some_and(|rest| rest.starts_with('.'))
            } else {
                key == r.key
            };
            scope && name
        })
    }

    /// Whether a query may name this attribute. Unscoped names (`.x`) reach every scope, and
    /// intrinsics that are attributes in disguise count as those attributes.
    fn hides_attribute(&self, a: &Attribute) -> Option<String> {
        let (at, key) = match a {
            Attribute::Attr { scope, name } => {
                let at = match scope {
                    Scope::Span => Where::Span,
                    Scope::Resource => Where::Resource,
                    Scope::Event => Where::Event,
                    Scope::Link => Where::Link,
                    Scope::Instrumentation => Where::Instrumentation,
                    Scope::Unscoped | Scope::Parent => Where::Any,
                };
                (at, name.as_str())
            }
            Attribute::Intrinsic(Intrinsic::TraceRootService) => (Where::Resource, "service.name"),
            Attribute::Intrinsic(_) => return None,
        };
        self.hides(at, key).then(|| match a {
            Attribute::Attr { scope, name } => format!("{}.{name}", scope.as_str()),
            Attribute::Intrinsic(_) => "resource.service.name (as trace:rootService)".into(),
        })
    }

    /// Refuses a query text that names a masked key; `Err` says which.
    pub fn check_query(&self, text: &str) -> Result<(), String> {
        let attrs = spoor_traceql::referenced(text).map_err(|e| format!("invalid TraceQL query: {e}"))?;
        match attrs.iter().find_map(|a| self.hides_attribute(a)) {
            Some(name) => Err(format!("the query names {name}, which this token may not read")),
            None => Ok(()),
        }
    }

    /// Refuses a tag-values request for a masked tag, read both as TraceQL (`span.x`, `.x`,
    /// `trace:rootService`) and as a bare key of any scope (v1 names), whichever the endpoint
    /// means: refusing both ways cannot leak.
    pub fn check_tag(&self, tag: &str) -> Result<(), String> {
        let refuse = || Err(format!("tag {tag:?} is masked for this token"));
        if let Ok(attrs) = spoor_traceql::referenced(tag)
            && attrs.iter().any(|a| self.hides_attribute(a).is_some())
        {
            return refuse();
        }
        if self.hides(Where::Any, tag) || self.hides(Where::Any, tag.trim_start_matches('.')) {
            return refuse();
        }
        Ok(())
    }

    /// Replaces masked values in a trace (resource, scope, span, event and link attributes).
    pub fn apply(&self, trace: &mut TracesData) {
        for rs in &mut trace.resource_spans {
            if let Some(r) = &mut rs.resource {
                self.mask(&mut r.attributes, Where::Resource);
            }
            for ss in &mut rs.scope_spans {
                if let Some(scope) = &mut ss.scope {
                    self.mask(&mut scope.attributes, Where::Instrumentation);
                }
                for span in &mut ss.spans {
                    self.mask(&mut span.attributes, Where::Span);
                    for e in &mut span.events {
                        self.mask(&mut e.attributes, Where::Event);
                    }
                    for l in &mut span.links {
                        self.mask(&mut l.attributes, Where::Link);
                    }
                }
            }
        }
    }

    fn mask(&self, attrs: &mut [KeyValue], at: Where) {
        for kv in attrs {
            if self.hides(at, &kv.key) {
                kv.value = Some(AnyValue { value: Some(any_value::Value::StringValue(MASKED.into())) });
            }
        }
    }

    /// Masks a search answer (Tempo's JSON): matched attributes whose key is masked in any
    /// scope, and the root service name (and the per-service statistics keyed by it) when
    /// `service.name` is masked.
    pub fn apply_search_json(&self, answer: &mut Json) {
        let service_hidden = self.hides(Where::Resource, "service.name");
        let Some(traces) = answer.get_mut("traces").and_then(Json::as_array_mut) else { return };
        for t in traces {
            if service_hidden && let Some(obj) = t.as_object_mut() {
                if obj.contains_key("rootServiceName") {
                    obj.insert("rootServiceName".into(), Json::String(MASKED.into()));
                }
                obj.remove("serviceStats");
            }
            self.mask_json_attributes(t);
        }
    }

    fn mask_json_attributes(&self, v: &mut Json) {
        match v {
            Json::Object(obj) => {
                if let Some(Json::String(key)) = obj.get("key")
                    && obj.contains_key("value")
                    && self.hides(Where::Any, key)
                {
                    obj.insert("value".into(), serde_json::json!({ "stringValue": MASKED }));
                    return;
                }
                for (_, child) in obj.iter_mut() {
                    self.mask_json_attributes(child);
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|c| self.mask_json_attributes(c)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(entries: &[&str]) -> Mask {
        Mask::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn queries_cannot_name_masked_keys_anywhere() {
        let m = mask(&["span.user.email", "resource.service.name", "span.http.request.header.*"]);
        for q in [
            r#"{ span.user.email = "a" }"#,
            r#"{ .user.email =~ "a.*" }"#,
            "{ } | select(span.user.email)",
            "{ } | rate() by (span.user.email)",
            r#"{ span.http.request.header.authorization != nil }"#,
            r#"{ trace:rootService = "x" }"#,
            r#"{ rootServiceName = "x" }"#,
            r#"{ span."user.email" = "a" }"#,
            "{ span.name = 1 } && { .service.name = 2 }",
        ] {
            assert!(m.check_query(q).is_err(), "{q} allowed");
        }
        for q in ["{ }", r#"{ resource.user.email = "a" }"#, "{ span.http.request.headers = 1 }", "{ name = \"x\" }"] {
            assert!(m.check_query(q).is_ok(), "{q} refused");
        }
        for tag in [
            "span.user.email",
            "user.email",
            ".user.email",
            "resource.service.name",
            "service.name",
            "trace:rootService",
        ] {
            assert!(m.check_tag(tag).is_err(), "{tag} allowed");
        }
        assert!(m.check_tag("span.other").is_ok() && m.check_tag("resource.user.email").is_ok());
        assert!(Mask::parse(&["user.email".to_string()]).is_err() && Mask::parse(&["span.".to_string()]).is_err());
    }
}
