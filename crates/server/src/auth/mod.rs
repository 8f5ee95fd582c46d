//! Authentication and authorization, off unless `auth.enabled`: bearer (or basic) tokens from
//! `auth.tokens_file`, roles, and the tenant taken from the token rather than trusted from
//! `X-Scope-OrgID` (`tokens`), or OIDC JWTs checked against the provider's keys (`oidc`, on `jwt`); attribute masking and span filters for read tokens (`mask`, `spans`); the guard every
//! listener's router goes through (`guard`); and the audit log of queries and admin actions
//! (`audit`). docs/security.md describes it for operators.

pub mod audit;
pub mod guard;
pub mod jwt;
pub mod mask;
pub mod oidc;
pub mod spans;
pub mod tokens;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `auth:` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Every request (but `/ready`, build info, echo and, unless `protect_metrics`, `/metrics`)
    /// must carry a token from `tokens_file`.
    pub enabled: bool,
    /// YAML list of `{name, sha256, tenants, roles, mask, spans}`; read again when it changes.
    pub tokens_file: PathBuf,
    /// JWTs from an OIDC provider, verified with its key set.
    pub oidc: oidc::OidcConfig,
    /// `/metrics` (Spoor's own series) needs the `admin` role too.
    pub protect_metrics: bool,
    /// Where audit lines go: a file path, `-` for stderr, empty for nowhere.
    pub audit_log: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            tokens_file: PathBuf::new(),
            oidc: oidc::OidcConfig::default(),
            protect_metrics: false,
            audit_log: "-".into(),
        }
    }
}
