//! The collector's `attributes` processor: insert, update, upsert, delete, hash, extract and
//! convert actions on span attributes, with optional `include`/`exclude` span filters.
//!
//! The configuration is the collector's YAML, so a team can paste what it already runs:
//!
//! ```yaml
//! actions:
//!   - { key: environment, value: production, action: insert }
//!   - { key: user.email, action: hash }
//!   - { pattern: ^secret_, action: delete }
//!   - { key: http.url, pattern: '^.*/users/(?P<user_id>\d+)', action: extract }
//! include:
//!   match_type: strict
//!   services: [checkout]
//! ```
//!
//! Spoor adds `apply_to: [span, resource, event, link]` (default `[span]`, the collector's
//! behaviour) to run the same actions on resource, span-event and span-link attributes.
//!
//! The configuration is checked while it is deserialized, so a YAML error points at the line of
//! the offending entry and names it (`actions[1]: extract requires a pattern`).
//!
//! **Regular expressions are unanchored** everywhere in this processor (`pattern` of
//! delete/hash/extract, and `match_type: regexp` filters): a pattern matches if it matches any
//! part of the text, exactly as the collector behaves (its filter comments speak of a "full match"
//! but its code does a substring search). Write `^…$` to anchor.
//!
//! Inside: `config` holds the YAML types and their checks, which compile into the actions and
//! filters of `compiled`; `apply` runs them on a request; `value` renders and converts attribute
//! values (the redaction processor renders the same way).

mod apply;
mod compiled;
mod config;
mod value;

pub use apply::{Attributes, Context};
pub(crate) use config::de_checked_seq;
pub use config::{
    ActionConfig, AttributeMatch, AttributesConfig, LibraryMatch, MatchConfig, RegexpCacheConfig, Target,
};
pub(crate) use value::{hex, string_value};
pub use value::{sha256_value, value_to_string};
