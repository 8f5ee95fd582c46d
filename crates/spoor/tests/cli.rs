//! The command line: configuration layering and start-up refusals, through the real binary.

mod common;

use std::process::Command;

use common::*;

fn spoor(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spoor")).args(args).envs(env.iter().copied()).output().unwrap()
}

#[test]
fn config_layers_file_env_and_flags() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.yaml");
    let out = spoor(
        &["config", "--config", example, "--data-dir", "/srv/spoor", "--http-listen", "127.0.0.1:9"],
        &[("SPOOR__LIMITS__MAX_LIVE_TRACES", "77"), ("SPOOR__WAL__DURABILITY", "os")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    for want in [
        "data_dir: /srv/spoor",
        "http_listen: 127.0.0.1:9",
        "max_live_traces: 77",
        "durability: os",
        "otlp_grpc_listen: 127.0.0.1:4317",
    ] {
        assert!(yaml.contains(want), "{want:?} missing from:\n{yaml}");
    }
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "server:\n  http_listen: 127.0.0.1:1\nlimits:\n  max_live_trace: 5\n").unwrap();
    let out = spoor(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_live_trace"), "{err}");
    let out = spoor(&["config"], &[("SPOOR__WAL__DURABILITY", "sometimes")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wal.durability") && err.contains("sometimes"), "{err}");
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let _first = Server::start(&data, &[]);
    let second = Server::unstarted(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--otlp-grpc-listen", &second.grpc, "--otlp-http-listen", &second.http, "--http-listen", &second.api])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another spoor process"), "{err}");
}
