//! The processor's configuration in the collector's YAML shape, checked while it is deserialized
//! (so errors carry the entry's line) and compiled into the actions and filters that
//! `compiled` defines.

use std::fmt;
use std::marker::PhantomData;

use regex::{Regex, RegexSet};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::compiled::{
    Action, AttrCond, ContextKey, ConvertTo, KeySelector, LibCond, Matcher, SPAN_KINDS, SetMode, Source, StrSet,
    ValueCond,
};
use super::value::json_to_any;
use crate::error::Error;

/// The `attributes` processor's configuration, in the collector's shape.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// Actions, run in this order on each attribute map.
    #[serde(default, deserialize_with = "de_actions")]
    pub actions: Vec<ActionConfig>,
    /// Only spans matching this are processed.
    #[serde(default, deserialize_with = "de_include")]
    pub include: Option<MatchConfig>,
    /// Spans matching this are not processed (checked after `include`).
    #[serde(default, deserialize_with = "de_exclude")]
    pub exclude: Option<MatchConfig>,
    /// Spoor extension: which attribute maps the actions run on. Default `[span]`.
    #[serde(default = "default_apply_to", deserialize_with = "de_apply_to")]
    pub apply_to: Vec<Target>,
}

fn default_apply_to() -> Vec<Target> {
    vec![Target::Span]
}

/// An attribute map the actions can run on (`apply_to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Span,
    Resource,
    Event,
    Link,
}

/// One entry of `actions`, as written. Checked when deserialized and again by
/// `Attributes::new` (for configurations built in code).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub key: Option<String>,
    /// A literal value (YAML string, int, float, bool, list or map).
    pub value: Option<serde_json::Value>,
    pub pattern: Option<String>,
    pub from_attribute: Option<String>,
    pub from_context: Option<String>,
    pub default_value: Option<serde_json::Value>,
    /// insert, update, upsert, delete, hash, extract, convert (case-insensitive).
    pub action: String,
    /// int, double or string (for `convert`).
    pub converted_type: Option<String>,
}

/// An `include` or `exclude` block.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `strict` or `regexp` (required).
    pub match_type: Option<String>,
    /// The collector's regexp cache settings; accepted and ignored (compiled sets need no cache).
    pub regexp: Option<RegexpCacheConfig>,
    /// Resource `service.name`.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub span_names: Vec<String>,
    /// `SPAN_KIND_SERVER` etc.; in strict mode `server`/`SERVER` are accepted too.
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// Span attributes; all must match.
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
    /// Resource attributes; all must match.
    #[serde(default)]
    pub resources: Vec<AttributeMatch>,
    /// Instrumentation scopes; any may match.
    #[serde(default)]
    pub libraries: Vec<LibraryMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexpCacheConfig {
    pub cacheenabled: Option<bool>,
    pub cachemaxnumentries: Option<u64>,
}

/// `{key, value}`: the attribute must exist and, if `value` is given, equal it (strict, typed)
/// or match it (regexp, against the value's string rendering).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    pub key: String,
    pub value: Option<serde_json::Value>,
}

/// `{name, version}` of an instrumentation scope; `version` optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryMatch {
    pub name: String,
    pub version: Option<String>,
}

/// Deserializes a list whose elements are checked one by one while the deserializer still
/// points at them, so the YAML error carries the element's line and the message names it
/// (`{field}[{i}]: …`).
pub(crate) fn de_checked_seq<'de, D, T, F>(d: D, field: &'static str, check: F) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: Fn(&T, &str) -> Result<(), Error>,
{
    struct Seed<'c, T, F> {
        at: String,
        check: &'c F,
        _t: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, F: Fn(&T, &str) -> Result<(), Error>> DeserializeSeed<'de> for Seed<'_, T, F> {
        type Value = T;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            let v = T::deserialize(d)?;
            (self.check)(&v, &self.at).map_err(de::Error::custom)?;
            Ok(v)
        }
    }
    struct V<T, F> {
        field: &'static str,
        check: F,
        _t: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, F: Fn(&T, &str) -> Result<(), Error>> Visitor<'de> for V<T, F> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list for `{}`", self.field)
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Vec<T>, S::Error> {
            let mut out = Vec::new();
            loop {
                let seed = Seed { at: format!("{}[{}]", self.field, out.len()), check: &self.check, _t: PhantomData };
                match s.next_element_seed(seed)? {
                    Some(v) => out.push(v),
                    None => return Ok(out),
                }
            }
        }
    }
    d.deserialize_seq(V { field, check, _t: PhantomData })
}

/// Deserializes `T` and checks it at once (errors carry the node's location).
pub(crate) fn de_checked<'de, D, T, F>(d: D, check: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: FnOnce(&T) -> Result<(), Error>,
{
    let v = T::deserialize(d)?;
    check(&v).map_err(de::Error::custom)?;
    Ok(v)
}

fn de_actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ActionConfig>, D::Error> {
    de_checked_seq(d, "actions", |a: &ActionConfig, at| compile_action(a, at).map(drop))
}

fn de_include<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MatchConfig>, D::Error> {
    de_checked(d, |m: &MatchConfig| compile_matcher(m, "include").map(drop)).map(Some)
}

fn de_exclude<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MatchConfig>, D::Error> {
    de_checked(d, |m: &MatchConfig| compile_matcher(m, "exclude").map(drop)).map(Some)
}

fn de_apply_to<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Target>, D::Error> {
    de_checked(d, |t: &Vec<Target>| check_apply_to(t))
}

pub(super) fn check_apply_to(t: &[Target]) -> Result<(), Error> {
    if t.is_empty() {
        return Err(Error::config("apply_to", "must name at least one of span, resource, event, link"));
    }
    Ok(())
}

fn regex(p: &str, at: &str) -> Result<Regex, Error> {
    Regex::new(p).map_err(|e| Error::config(at, format!("bad regular expression {p:?}: {e}")))
}

pub(super) fn compile_action(a: &ActionConfig, at: &str) -> Result<Action, Error> {
    let name = a.action.to_ascii_lowercase();
    let err = |m: String| Error::config(at, m);
    let key = a.key.as_deref().filter(|k| !k.is_empty());
    let unused = |fields: &[(&str, bool)]| -> Result<(), Error> {
        match fields.iter().find(|(_, set)| *set) {
            Some((f, _)) => Err(err(format!("{name} does not take `{f}`"))),
            None => Ok(()),
        }
    };
    match name.as_str() {
        "insert" | "update" | "upsert" => {
            let mode = match name.as_str() {
                "insert" => SetMode::Insert,
                "update" => SetMode::Update,
                _ => SetMode::Upsert,
            };
            let key = key.ok_or_else(|| err(format!("{name} requires a key")))?;
            unused(&[("pattern", a.pattern.is_some()), ("converted_type", a.converted_type.is_some())])?;
            let literal = a.value.as_ref().filter(|v| !v.is_null());
            let sources = [literal.is_some(), a.from_attribute.is_some(), a.from_context.is_some()];
            let source = match sources.iter().filter(|s| **s).count() {
                0 => return Err(err(format!("{name} requires one of value, from_attribute or from_context"))),
                1 => {
                    if let Some(v) = literal {
                        if a.default_value.is_some() {
                            return Err(err("default_value applies only with from_attribute or from_context".into()));
                        }
                        Source::Value(json_to_any(v).unwrap_or_default())
                    } else if let Some(src) = &a.from_attribute {
                        Source::Attribute(src.clone())
                    } else {
                        let c = a.from_context.as_deref().unwrap_or_default();
                        Source::Context(if c == "client.address" {
                            ContextKey::ClientAddress
                        } else if c.starts_with("auth.") {
                            ContextKey::Auth
                        } else {
                            let name = c.strip_prefix("metadata.").unwrap_or(c);
                            if name.is_empty() {
                                return Err(err("from_context names no key".into()));
                            }
                            ContextKey::Metadata(name.to_ascii_lowercase())
                        })
                    }
                }
                _ => return Err(err("only one of value, from_attribute and from_context may be set".into())),
            };
            let default = a.default_value.as_ref().and_then(json_to_any);
            Ok(Action::Set { key: key.to_owned(), mode, source, default })
        }
        "delete" | "hash" => {
            unused(&[
                ("value", a.value.is_some()),
                ("from_attribute", a.from_attribute.is_some()),
                ("from_context", a.from_context.is_some()),
                ("default_value", a.default_value.is_some()),
                ("converted_type", a.converted_type.is_some()),
            ])?;
            let pattern = a.pattern.as_deref().map(|p| regex(p, at)).transpose()?;
            if key.is_none() && pattern.is_none() {
                return Err(err(format!("{name} requires a key or a pattern")));
            }
            let sel = KeySelector { key: key.map(str::to_owned), pattern };
            Ok(if name == "delete" { Action::Delete(sel) } else { Action::Hash(sel) })
        }
        "extract" => {
            let key = key.ok_or_else(|| err("extract requires a key".into()))?;
            unused(&[
                ("value", a.value.is_some()),
                ("from_attribute", a.from_attribute.is_some()),
                ("from_context", a.from_context.is_some()),
                ("default_value", a.default_value.is_some()),
                ("converted_type", a.converted_type.is_some()),
            ])?;
            let p = a.pattern.as_deref().ok_or_else(|| err("extract requires a pattern".into()))?;
            let regex = regex(p, at)?;
            let names: Vec<String> = regex.capture_names().flatten().map(str::to_owned).collect();
            if names.is_empty() {
                return Err(err(format!("extract pattern {p:?} has no named group (?P<name>…)")));
            }
            if names.len() + 1 != regex.captures_len() {
                return Err(err(format!("extract pattern {p:?} has an unnamed group; use (?P<name>…) or (?:…)")));
            }
            Ok(Action::Extract { key: key.to_owned(), regex, names })
        }
        "convert" => {
            let key = key.ok_or_else(|| err("convert requires a key".into()))?;
            unused(&[
                ("value", a.value.is_some()),
                ("pattern", a.pattern.is_some()),
                ("from_attribute", a.from_attribute.is_some()),
                ("from_context", a.from_context.is_some()),
                ("default_value", a.default_value.is_some()),
            ])?;
            let to = match a.converted_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("int") => ConvertTo::Int,
                Some("double") => ConvertTo::Double,
                Some("string") => ConvertTo::String,
                Some(other) => {
                    return Err(err(format!("convert: converted_type {other:?} is not one of int, double, string")));
                }
                None => return Err(err("convert requires converted_type (int, double or string)".into())),
            };
            Ok(Action::Convert { key: key.to_owned(), to })
        }
        "" => Err(err("action is empty (insert, update, upsert, delete, hash, extract, convert)".into())),
        other => Err(err(format!("unknown action {other:?} (insert, update, upsert, delete, hash, extract, convert)"))),
    }
}

pub(super) fn compile_matcher(m: &MatchConfig, at: &str) -> Result<Matcher, Error> {
    let regexp = match m.match_type.as_deref() {
        Some("strict") => false,
        Some("regexp") => true,
        Some(other) => {
            return Err(Error::config(format!("{at}.match_type"), format!("{other:?} is not one of strict, regexp")));
        }
        None => return Err(Error::config(format!("{at}.match_type"), "is required (strict or regexp)")),
    };
    if m.services.is_empty()
        && m.span_names.is_empty()
        && m.span_kinds.is_empty()
        && m.attributes.is_empty()
        && m.resources.is_empty()
        && m.libraries.is_empty()
    {
        return Err(Error::config(
            at,
            "names no field to match (services, span_names, span_kinds, attributes, resources, libraries)",
        ));
    }
    let set = |items: &[String], field: &str| -> Result<Option<StrSet>, Error> {
        if items.is_empty() {
            return Ok(None);
        }
        Ok(Some(if regexp {
            for (i, p) in items.iter().enumerate() {
                regex(p, &format!("{at}.{field}[{i}]"))?;
            }
            StrSet::Regexp(RegexSet::new(items).map_err(|e| Error::config(format!("{at}.{field}"), e.to_string()))?)
        } else {
            StrSet::Strict(items.to_vec())
        }))
    };
    let kinds: Vec<String> = if regexp {
        m.span_kinds.clone()
    } else {
        m.span_kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let up = k.to_ascii_uppercase();
                let full = if up.starts_with("SPAN_KIND_") { up } else { format!("SPAN_KIND_{up}") };
                if SPAN_KINDS.contains(&full.as_str()) {
                    Ok(full)
                } else {
                    Err(Error::config(
                        format!("{at}.span_kinds[{i}]"),
                        format!("unknown span kind {k:?} (one of {})", SPAN_KINDS.join(", ")),
                    ))
                }
            })
            .collect::<Result<_, _>>()?
    };
    let conds = |items: &[AttributeMatch], field: &str| -> Result<Vec<AttrCond>, Error> {
        items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let at = format!("{at}.{field}[{i}]");
                if a.key.is_empty() {
                    return Err(Error::config(at, "key is empty"));
                }
                let value = match a.value.as_ref().filter(|v| !v.is_null()) {
                    None => ValueCond::Exists,
                    Some(v) if regexp => match v {
                        serde_json::Value::String(p) => ValueCond::Regexp(regex(p, &at)?),
                        _ => return Err(Error::config(at, "with match_type regexp, value must be a string pattern")),
                    },
                    Some(v) => ValueCond::Equals(json_to_any(v).unwrap_or_default()),
                };
                Ok(AttrCond { key: a.key.clone(), value })
            })
            .collect()
    };
    let libraries = m
        .libraries
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let at = format!("libraries[{i}]");
            Ok(LibCond {
                name: set(std::slice::from_ref(&l.name), &format!("{at}.name"))?.expect("one item"),
                version: l
                    .version
                    .as_ref()
                    .map(|v| set(std::slice::from_ref(v), &format!("{at}.version")))
                    .transpose()?
                    .flatten(),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Matcher {
        services: set(&m.services, "services")?,
        span_names: set(&m.span_names, "span_names")?,
        span_kinds: set(&kinds, "span_kinds")?,
        attributes: conds(&m.attributes, "attributes")?,
        resources: conds(&m.resources, "resources")?,
        libraries,
    })
}
