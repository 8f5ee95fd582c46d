//! Any text: the parser must not panic, and what it accepts must print back to the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(q) = spoor_traceql::parse(text) {
        let printed = q.to_string();
        assert_eq!(spoor_traceql::parse(&printed), Ok(q), "{text:?} printed as {printed:?}");
    }
});
