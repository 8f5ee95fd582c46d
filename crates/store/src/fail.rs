//! Fail points for crash tests: `SPOOR_FAILPOINT=<name>` makes the process abort (no cleanup,
//! like `kill -9`) when it reaches that point. Read once; costs one load afterwards.

use std::sync::OnceLock;

pub fn point(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    if ARMED.get_or_init(|| std::env::var("SPOOR_FAILPOINT").ok()).as_deref() == Some(name) {
        eprintln!("spoor: fail point {name} reached; aborting");
        std::process::abort();
    }
}
