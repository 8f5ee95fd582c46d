//! Running the compiled actions on a request: which spans pass the filters, and what each
//! action does to an attribute map.

use spoor_model::otlp::{AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Span, any_value::Value};

use super::compiled::{Action, ContextKey, ConvertTo, Matcher, SetMode, Source};
use super::config::{AttributesConfig, Target, check_apply_to, compile_action, compile_matcher};
use super::value::{render, sha256_value, string_value};
use crate::Counts;
use crate::error::Error;

/// Request context for `from_context`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// Request headers / gRPC metadata, names lowercase; a name may repeat.
    pub metadata: &'a [(String, String)],
    /// The client's address (`client.address`).
    pub client_address: Option<&'a str>,
}

/// A compiled `attributes` processor.
#[derive(Clone, Debug)]
pub struct Attributes {
    actions: Vec<Action>,
    include: Option<Matcher>,
    exclude: Option<Matcher>,
    span: bool,
    resource: bool,
    event: bool,
    link: bool,
}

impl Attributes {
    /// Checks and compiles a configuration.
    pub fn new(cfg: &AttributesConfig) -> Result<Attributes, Error> {
        let actions = cfg
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| compile_action(a, &format!("actions[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let include = cfg.include.as_ref().map(|m| compile_matcher(m, "include")).transpose()?;
        let exclude = cfg.exclude.as_ref().map(|m| compile_matcher(m, "exclude")).transpose()?;
        check_apply_to(&cfg.apply_to)?;
        let has = |t| cfg.apply_to.contains(&t);
        Ok(Attributes {
            actions,
            include,
            exclude,
            span: has(Target::Span),
            resource: has(Target::Resource),
            event: has(Target::Event),
            link: has(Target::Link),
        })
    }

    /// Runs the actions on every span (and, per `apply_to`, resource, event and link) that
    /// passes the filters. Filters are evaluated on the request as it arrived, before any
    /// action of this processor ran. A resource is processed when at least one of its spans
    /// passes (or, with no filters, always).
    pub fn apply(&self, req: &mut ExportTraceServiceRequest, ctx: &Context) -> Counts {
        let mut counts = Counts::default();
        if self.actions.is_empty() {
            return counts;
        }
        let filtered = self.include.is_some() || self.exclude.is_some();
        let mut pass: Vec<bool> = Vec::new();
        for rs in &mut req.resource_spans {
            if filtered {
                pass.clear();
                let res_attrs: &[KeyValue] = rs.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or(&[]);
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        pass.push(self.passes(res_attrs, ss.scope.as_ref(), span));
                    }
                }
            }
            if self.resource
                && (!filtered || pass.iter().any(|p| *p))
                && let Some(r) = rs.resource.as_mut()
            {
                counts += self.run(&mut r.attributes, ctx);
            }
            let mut i = 0;
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    let ok = !filtered || pass[i];
                    i += 1;
                    if !ok {
                        continue;
                    }
                    if self.span {
                        counts += self.run(&mut span.attributes, ctx);
                    }
                    if self.event {
                        for e in &mut span.events {
                            counts += self.run(&mut e.attributes, ctx);
                        }
                    }
                    if self.link {
                        for l in &mut span.links {
                            counts += self.run(&mut l.attributes, ctx);
                        }
                    }
                }
            }
        }
        counts
    }

    fn passes(&self, res: &[KeyValue], scope: Option<&InstrumentationScope>, span: &Span) -> bool {
        if let Some(m) = &self.include
            && !m.matches(res, scope, span)
        {
            return false;
        }
        if let Some(m) = &self.exclude
            && m.matches(res, scope, span)
        {
            return false;
        }
        true
    }

    /// Runs every action, in order, on one attribute map.
    fn run(&self, attrs: &mut Vec<KeyValue>, ctx: &Context) -> Counts {
        let mut c = Counts::default();
        for a in &self.actions {
            match a {
                Action::Set { key, mode, source, default } => {
                    let pos = attrs.iter().position(|kv| kv.key == *key);
                    let skip = match mode {
                        SetMode::Insert => pos.is_some(),
                        SetMode::Update => pos.is_none(),
                        SetMode::Upsert => false,
                    };
                    if skip {
                        continue;
                    }
                    let v = match source {
                        Source::Value(v) => Some(v.clone()),
                        Source::Attribute(src) => {
                            attrs.iter().find(|kv| kv.key == *src).map(|kv| kv.value.clone().unwrap_or_default())
                        }
                        Source::Context(k) => context_value(ctx, k).map(string_value),
                    };
                    let Some(v) = v.or_else(|| default.clone()) else { continue };
                    match pos {
                        Some(p) => attrs[p].value = Some(v),
                        None => attrs.push(KeyValue { key: key.clone(), value: Some(v) }),
                    }
                    c.set += 1;
                }
                Action::Delete(sel) => {
                    let before = attrs.len();
                    attrs.retain(|kv| !sel.matches(&kv.key));
                    c.deleted += (before - attrs.len()) as u64;
                }
                Action::Hash(sel) => {
                    for kv in attrs.iter_mut().filter(|kv| sel.matches(&kv.key)) {
                        let h = sha256_value(kv.value.as_ref());
                        kv.value = Some(string_value(h));
                        c.hashed += 1;
                    }
                }
                Action::Extract { key, regex, names } => {
                    let Some(Value::StringValue(s)) =
                        attrs.iter().find(|kv| kv.key == *key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    else {
                        continue;
                    };
                    let Some(caps) = regex.captures(s) else { continue };
                    let found: Vec<(String, String)> = names
                        .iter()
                        .map(|n| (n.clone(), caps.name(n).map_or(String::new(), |m| m.as_str().to_owned())))
                        .collect();
                    for (k, v) in found {
                        upsert(attrs, k, string_value(v));
                        c.set += 1;
                    }
                }
                Action::Convert { key, to } => {
                    let Some(kv) = attrs.iter_mut().find(|kv| kv.key == *key) else { continue };
                    if let Some(v) = convert(kv.value.as_ref(), *to) {
                        kv.value = Some(v);
                        c.set += 1;
                    }
                }
            }
        }
        c
    }
}

fn upsert(attrs: &mut Vec<KeyValue>, key: String, v: AnyValue) {
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(v),
        None => attrs.push(KeyValue { key, value: Some(v) }),
    }
}

fn context_value(ctx: &Context, k: &ContextKey) -> Option<String> {
    match k {
        ContextKey::ClientAddress => ctx.client_address.map(str::to_owned),
        ContextKey::Auth => None,
        ContextKey::Metadata(name) => {
            let mut vals = ctx.metadata.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
            let first = vals.next()?;
            let mut out = first.to_owned();
            for v in vals {
                out.push(';');
                out.push_str(v);
            }
            Some(out)
        }
    }
}

fn convert(v: Option<&AnyValue>, to: ConvertTo) -> Option<AnyValue> {
    let v = v?.value.as_ref();
    let out = match (to, v) {
        (ConvertTo::Int, Some(Value::DoubleValue(f))) => Value::IntValue(f.trunc() as i64),
        (ConvertTo::Int, Some(Value::BoolValue(b))) => Value::IntValue(*b as i64),
        (ConvertTo::Int, Some(Value::StringValue(s))) => Value::IntValue(s.parse::<i64>().ok()?),
        (ConvertTo::Double, Some(Value::IntValue(i))) => Value::DoubleValue(*i as f64),
        (ConvertTo::Double, Some(Value::BoolValue(b))) => Value::DoubleValue(if *b { 1.0 } else { 0.0 }),
        (ConvertTo::Double, Some(Value::StringValue(s))) => Value::DoubleValue(s.parse::<f64>().ok()?),
        (ConvertTo::String, Some(Value::StringValue(_))) => return None,
        (ConvertTo::String, v) => Value::StringValue(render(v)),
        _ => return None,
    };
    Some(AnyValue { value: Some(out) })
}
