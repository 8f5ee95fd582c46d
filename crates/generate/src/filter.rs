//! Span-metrics `filter_policies` in Tempo's shape: a span is counted when, for every policy,
//! it matches the policy's `include` (every listed attribute), `include_any` (at least one) and
//! none of its `exclude`.
//!
//! Keys are `resource.<name>`, `span.<name>`, or the intrinsics `name`, `status` and `kind`,
//! whose values are written as the metrics show them (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`).
//! `strict` compares typed values (int 200 is not the string "200"); `regex` matches the value
//! as text, unanchored.

use regex::Regex;
use serde::{Deserialize, Serialize};
use spoor_model::otlp::{AnyValue, KeyValue, Span, any_value};

use crate::error::Error;
use crate::labels::{self, kind_name, status_name};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FilterPolicy {
    pub include: Option<PolicyMatch>,
    pub include_any: Option<PolicyMatch>,
    pub exclude: Option<PolicyMatch>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyMatch {
    pub match_type: MatchType,
    pub attributes: Vec<MatchAttribute>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    #[default]
    Strict,
    Regex,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchAttribute {
    pub key: String,
    pub value: ConfigValue,
}

/// A value as YAML gives it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ConfigValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// Where a key points.
#[derive(Debug)]
enum Key {
    Resource(String),
    Span(String),
    Name,
    Status,
    Kind,
}

#[derive(Debug)]
enum Want {
    Exact(ConfigValue),
    Pattern(Regex),
}

#[derive(Debug)]
struct Compiled {
    all: bool,
    conditions: Vec<(Key, Want)>,
}

/// Compiled policies.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    policies: Vec<[Option<Compiled>; 3]>,
}

impl Filter {
    pub fn new(policies: &[FilterPolicy]) -> Result<Filter, Error> {
        let compile = |i: usize, part: &str, m: &Option<PolicyMatch>, all: bool| -> Result<Option<Compiled>, Error> {
            let Some(m) = m else { return Ok(None) };
            let bad = |why: String| Error::Config(format!("span_metrics.filter_policies[{i}].{part}: {why}"));
            if m.attributes.is_empty() {
                return Err(bad("lists no attributes".into()));
            }
            let conditions = m
                .attributes
                .iter()
                .map(|a| {
                    let key = match a.key.as_str() {
                        "name" => Key::Name,
                        "status" => Key::Status,
                        "kind" => Key::Kind,
                        k => match (k.strip_prefix("resource."), k.strip_prefix("span.")) {
                            (Some(r), _) if !r.is_empty() => Key::Resource(r.to_string()),
                            (_, Some(s)) if !s.is_empty() => Key::Span(s.to_string()),
                            _ => {
                                return Err(bad(format!(
                                    "key {k:?} is none of resource.<name>, span.<name>, name, status, kind"
                                )));
                            }
                        },
                    };
                    let want = match (m.match_type, &a.value) {
                        (MatchType::Strict, v) => Want::Exact(v.clone()),
                        (MatchType::Regex, ConfigValue::Text(p)) => {
                            Want::Pattern(Regex::new(p).map_err(|e| bad(format!("{:?}: {e}", a.key)))?)
                        }
                        (MatchType::Regex, _) => return Err(bad(format!("{:?}: a regex must be a string", a.key))),
                    };
                    Ok((key, want))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            Ok(Some(Compiled { all, conditions }))
        };
        let policies = policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.include.is_none() && p.include_any.is_none() && p.exclude.is_none() {
                    return Err(Error::Config(format!(
                        "span_metrics.filter_policies[{i}]: needs include, include_any or exclude"
                    )));
                }
                Ok([
                    compile(i, "include", &p.include, true)?,
                    compile(i, "include_any", &p.include_any, false)?,
                    compile(i, "exclude", &p.exclude, true)?,
                ])
            })
            .collect::<Result<_, Error>>()?;
        Ok(Filter { policies })
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether the span is counted.
    pub fn keeps(&self, resource: &[KeyValue], span: &Span) -> bool {
        self.policies.iter().all(|[include, include_any, exclude]| {
            include.as_ref().is_none_or(|m| m.matches(resource, span))
                && include_any.as_ref().is_none_or(|m| m.matches(resource, span))
                && !exclude.as_ref().is_some_and(|m| m.matches(resource, span))
        })
    }
}

impl Compiled {
    fn matches(&self, resource: &[KeyValue], span: &Span) -> bool {
        let one = |(key, want): &(Key, Want)| {
            let value = match key {
                Key::Resource(k) => Value::Attr(labels::find(resource, k)),
                Key::Span(k) => Value::Attr(labels::find(&span.attributes, k)),
                Key::Name => Value::Text(&span.name),
                Key::Status => Value::Text(status_name(span.status.as_ref().map_or(0, |s| s.code))),
                Key::Kind => Value::Text(kind_name(span.kind)),
            };
            value.is(want)
        };
        if self.all { self.conditions.iter().all(one) } else { self.conditions.iter().any(one) }
    }
}

enum Value<'a> {
    Attr(Option<&'a AnyValue>),
    Text(&'a str),
}

impl Value<'_> {
    fn is(&self, want: &Want) -> bool {
        match (self, want) {
            (Value::Text(t), Want::Exact(ConfigValue::Text(w))) => w == t,
            (Value::Text(_), Want::Exact(_)) => false,
            (Value::Text(t), Want::Pattern(r)) => r.is_match(t),
            (Value::Attr(a), Want::Exact(w)) => match (a.and_then(|a| a.value.as_ref()), w) {
                (Some(any_value::Value::StringValue(s)), ConfigValue::Text(w)) => s == w,
                (Some(any_value::Value::IntValue(i)), ConfigValue::Int(w)) => i == w,
                (Some(any_value::Value::DoubleValue(d)), ConfigValue::Float(w)) => d == w,
                (Some(any_value::Value::DoubleValue(d)), ConfigValue::Int(w)) => *d == *w as f64,
                (Some(any_value::Value::BoolValue(b)), ConfigValue::Bool(w)) => b == w,
                _ => false,
            },
            (Value::Attr(a), Want::Pattern(r)) => {
                let mut text = String::new();
                labels::push_value(&mut text, *a) && r.is_match(&text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }) }
    }

    fn policies(yaml: &str) -> Result<Filter, Error> {
        Filter::new(&serde_saphyr::from_str::<Vec<FilterPolicy>>(yaml).unwrap())
    }

    #[test]
    fn include_exclude_and_include_any() {
        let f = policies(
            "- include: {match_type: strict, attributes: [{key: kind, value: SPAN_KIND_SERVER}, {key: resource.env, value: prod}]}\n  exclude: {match_type: regex, attributes: [{key: span.http.target, value: ^/health}]}\n- include_any: {attributes: [{key: span.http.status_code, value: 200}, {key: status, value: STATUS_CODE_ERROR}]}\n",
        )
        .unwrap();
        let prod = [kv("env", any_value::Value::StringValue("prod".into()))];
        let span = |kind: i32, target: &str, code: i64| Span {
            kind,
            attributes: vec![
                kv("http.target", any_value::Value::StringValue(target.into())),
                kv("http.status_code", any_value::Value::IntValue(code)),
            ],
            ..Span::default()
        };
        assert!(f.keeps(&prod, &span(2, "/cart", 200)));
        assert!(!f.keeps(&prod, &span(3, "/cart", 200)), "a client span");
        assert!(!f.keeps(&[], &span(2, "/cart", 200)), "not prod");
        assert!(!f.keeps(&prod, &span(2, "/healthz", 200)), "excluded");
        assert!(!f.keeps(&prod, &span(2, "/cart", 404)), "no include_any condition holds");
        let mut failed = span(2, "/cart", 500);
        failed.status = Some(spoor_model::otlp::Status { code: 2, message: String::new() });
        assert!(f.keeps(&prod, &failed));
        // Strict is typed: the string "200" is not the int 200.
        let f = policies("- include: {attributes: [{key: span.code, value: \"200\"}]}\n").unwrap();
        assert!(
            !f.keeps(&[], &Span { attributes: vec![kv("code", any_value::Value::IntValue(200))], ..Span::default() })
        );
    }

    #[test]
    fn mistakes_name_the_policy() {
        let err = |yaml: &str| policies(yaml).unwrap_err().to_string();
        assert!(err("- {}\n").contains("filter_policies[0]: needs include"));
        assert!(err("- include: {attributes: [{key: http.method, value: GET}]}\n").contains("key \"http.method\""));
        assert!(err("- exclude: {match_type: regex, attributes: [{key: name, value: \"(\"}]}\n").contains("exclude"));
        assert!(err("- include: {attributes: []}\n").contains("lists no attributes"));
    }
}
