//! What a field expression reads (an attribute in a scope, or an intrinsic), and which block
//! columns that takes: the plan asks for those and nothing else.

use spoor_block::columns as col;
use spoor_traceql::ast::{Intrinsic, Scope};

/// What an attribute reference or intrinsic reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    Attr { scope: Scope, key: String },
    Intrinsic(Intrinsic),
}

impl Field {
    /// Computed from a whole trace (parent, children, root, extent): not available to the
    /// prefilter, which sees rows without their traces.
    pub(crate) fn trace_level(&self) -> bool {
        use Intrinsic::*;
        matches!(self, Field::Intrinsic(ParentId | ChildCount | TraceDuration | TraceRootName | TraceRootService))
    }

    /// Top-level block columns this field reads, given the names of the batch's columns.
    pub(crate) fn columns(&self, available: &[&str], out: &mut Vec<String>) {
        let mut add = |name: &str| {
            if available.contains(&name) && !out.iter().any(|c| c == name) {
                out.push(name.to_owned());
            }
        };
        match self {
            Field::Attr { scope, key } => {
                let (span, resource) = (format!("span.{key}"), dedicated_resource_column(key));
                let scopes: &[Scope] = match scope {
                    Scope::Unscoped => {
                        &[Scope::Span, Scope::Resource, Scope::Event, Scope::Link, Scope::Instrumentation]
                    }
                    other => std::slice::from_ref(other),
                };
                for scope in scopes {
                    match scope {
                        Scope::Span => [span.as_str(), col::ATTRS].iter().for_each(|c| add(c)),
                        Scope::Resource => [resource.as_str(), col::RESOURCE_ATTRS].iter().for_each(|c| add(c)),
                        Scope::Event => add(col::EVENTS),
                        Scope::Link => add(col::LINKS),
                        Scope::Instrumentation => add(col::SCOPE_ATTRS),
                        Scope::Unscoped | Scope::Parent => {}
                    }
                }
            }
            Field::Intrinsic(i) => {
                use Intrinsic::*;
                let names: &[&str] = match i {
                    Duration => &[col::DURATION],
                    Name => &[col::NAME],
                    Status => &[col::STATUS_CODE],
                    StatusMessage => &[col::STATUS_MESSAGE],
                    Kind => &[col::KIND],
                    SpanId => &[col::SPAN_ID],
                    ParentId => &[col::SPAN_ID, col::PARENT_SPAN_ID, col::NESTED_LEFT, col::NESTED_PARENT],
                    ChildCount => &[col::NESTED_LEFT, col::NESTED_PARENT],
                    TraceId => &[col::TRACE_ID],
                    TraceDuration => &[col::START, col::DURATION],
                    TraceRootName => &[col::NAME, col::NESTED_PARENT],
                    TraceRootService => &[col::SERVICE_NAME, col::NESTED_PARENT],
                    EventName | EventTimeSinceStart => &[col::EVENTS],
                    LinkTraceId | LinkSpanId => &[col::LINKS],
                    InstrumentationName => &[col::SCOPE_NAME],
                    InstrumentationVersion => &[col::SCOPE_VERSION],
                    NestedSetLeft => &[col::NESTED_LEFT],
                    NestedSetRight => &[col::NESTED_RIGHT],
                    NestedSetParent => &[col::NESTED_PARENT],
                    Parent => &[],
                };
                names.iter().for_each(|c| add(c));
            }
        }
    }
}

/// The resource `service.name` always has its own column, named differently.
pub(super) fn dedicated_resource_column(key: &str) -> String {
    if key == "service.name" { col::SERVICE_NAME.to_owned() } else { format!("resource.{key}") }
}
