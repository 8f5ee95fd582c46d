//! The test infrastructure itself: the fault proxy and the moto S3 server behave as the block
//! tests assume.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::proxy::FaultProxy;
use common::s3::{Moto, s3_env_at};

/// An echo server on a free port, one thread per connection, for as long as the test runs.
fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `msg` and reads the echo back.
fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    Ok(got)
}

/// True once the connection is closed or reset by the other end (EOF or an error), as opposed
/// to merely silent: the read timeout makes a silent connection fail the test instead.
fn is_cut(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("expected the connection to be cut, read {n} bytes"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

#[test]
fn proxy_forwards_goes_down_and_comes_back() {
    let proxy = FaultProxy::start(&echo_server());

    let mut before = connect(&proxy.addr());
    assert_eq!(echo(&mut before, b"ping").unwrap(), b"ping");
    assert_eq!(echo(&mut before, b"again").unwrap(), b"again", "a connection carries more than one exchange");

    proxy.set_down(true);
    assert!(proxy.is_down());
    // The open connection is cut...
    assert!(is_cut(&mut before), "an open connection survived set_down(true)");
    // ...and new ones are accepted, then closed without reaching the upstream.
    let accepted = proxy.accepted();
    let mut during = connect(&proxy.addr());
    let _ = during.write_all(b"lost");
    assert!(is_cut(&mut during), "a connection made while down was not closed");
    assert_eq!(proxy.accepted(), accepted + 1);

    proxy.set_down(false);
    let mut after = connect(&proxy.addr());
    assert_eq!(echo(&mut after, b"back").unwrap(), b"back");
}

#[test]
fn proxy_resets_when_the_upstream_is_gone() {
    let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let proxy = FaultProxy::start(&gone);
    let mut s = connect(&proxy.addr());
    let _ = s.write_all(b"x");
    assert!(is_cut(&mut s));
}

#[test]
fn moto_serves_a_bucket() {
    let moto = Moto::start();
    moto.create_bucket("infra");
    assert!(moto.list_keys("infra", "").is_empty());

    let keys = ["t/a/meta.json", "t/a/data.parquet", "t/b/meta.json", "t/b/x&y <z>.bin", "u/c/meta.json"];
    for k in keys {
        moto.put_object("infra", k, k.as_bytes());
    }
    let mut t_keys: Vec<String> = keys.iter().filter(|k| k.starts_with("t/")).map(|k| k.to_string()).collect();
    t_keys.sort();
    assert_eq!(moto.list_keys("infra", "t/"), t_keys);
    // Continuation tokens: pages of two keys give the same listing.
    assert_eq!(moto.list_keys_paged("infra", "t/", 2), t_keys);
    assert_eq!(moto.list_keys("infra", "").len(), keys.len());

    assert_eq!(moto.get_object("infra", "t/b/x&y <z>.bin").as_deref(), Some(&b"t/b/x&y <z>.bin"[..]));
    moto.delete_key("infra", "t/a/meta.json");
    assert_eq!(moto.get_object("infra", "t/a/meta.json"), None);
    assert_eq!(moto.list_keys("infra", "t/a/"), ["t/a/data.parquet"]);

    let env = moto.s3_env("infra");
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("SPOOR__STORAGE__BACKEND"), Some("s3"));
    assert_eq!(get("SPOOR__STORAGE__S3__BUCKET"), Some("infra"));
    assert_eq!(get("SPOOR__STORAGE__S3__ENDPOINT"), Some(moto.endpoint.as_str()));
}

#[test]
fn moto_through_the_proxy() {
    let moto = Moto::start();
    moto.create_bucket("proxied");
    moto.put_object("proxied", "k", b"v");
    let proxy = FaultProxy::start(moto.endpoint.strip_prefix("http://").unwrap());
    let env = s3_env_at(&proxy.url(), "proxied");
    assert!(env.contains(&("SPOOR__STORAGE__S3__ENDPOINT".to_owned(), proxy.url())));

    let list = |addr: &str| -> std::io::Result<String> {
        let mut s = connect(addr);
        write!(s, "GET /proxied?list-type=2 HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    assert!(list(&proxy.addr()).unwrap().contains("<Key>k</Key>"));
    proxy.set_down(true);
    assert!(!list(&proxy.addr()).unwrap_or_default().contains("<Key>k</Key>"));
    proxy.set_down(false);
    assert!(list(&proxy.addr()).unwrap().contains("<Key>k</Key>"));
}

#[test]
#[should_panic(expected = "moto_server not found")]
fn missing_moto_is_a_failure_not_a_skip() {
    Moto::start_binary(Path::new("/nonexistent/moto_server"));
}
