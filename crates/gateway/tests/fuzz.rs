//! Bad input never takes the gateway down: random bytes, broken requests
//! and odd bodies, then a good request still works.

mod common;

use std::time::Duration;

use common::*;
use nuketown_gateway::Gateway;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn throw(addr: std::net::SocketAddr, bytes: &[u8]) {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let _ = tcp.write_all(bytes).await;
    let _ = tcp.shutdown().await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut sink)).await;
}

fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "CONNECT", "PUT", "\0", "GE T"]);
    let target = prop::sample::select(vec![
        "/anthropic/v1/messages",
        "/openai/../x",
        "/%2e%2e/",
        "github.test:443",
        "http://x/",
        "*",
        "/",
        "//",
        "[::1]:99999",
        "/anthropic",
    ]);
    let header = prop::sample::select(vec![
        "content-length: 5",
        "content-length: -1",
        "content-length: 99999999999999999999",
        "transfer-encoding: chunked",
        "content-type: application/json",
        "x-api-key: \u{7f}",
        "host:",
        ": x",
    ]);
    (
        method,
        target,
        prop::collection::vec(header, 0..4),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(m, t, hs, body)| {
            let mut out = format!("{m} {t} HTTP/1.1\r\n").into_bytes();
            for h in hs {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out
        })
}

#[test]
fn random_input_never_stops_the_gateway() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (up, gw, _events) = runtime.block_on(async {
        let up = upstream().await;
        let (gw, events) = Gateway::start(config(
            &up,
            Some(nuketown_gateway::generate_ca("fuzz").unwrap()),
        ))
        .await
        .unwrap();
        (up, gw, events)
    });
    let addr = gw.local_addr();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 150,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &prop_oneof![prop::collection::vec(any::<u8>(), 0..512), request_like()],
            |bytes| {
                runtime.block_on(throw(addr, &bytes));
                Ok(())
            },
        )
        .unwrap();
    runtime.block_on(async {
        // JSON that is not an object, a model that is not a string, a body of junk.
        let c = client();
        let base = format!("http://{addr}/anthropic/v1/messages");
        for body in ["[1,2]", "{\"model\":[1]}", "{\"model\":", "\u{0}\u{1}"] {
            let (status, _) = send(
                &c,
                "POST",
                base.clone(),
                &[("content-type", "application/json")],
                body,
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = send(
            &c,
            "POST",
            base,
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (
                200,
                r#"{"model":"claude-test","usage":{"input_tokens":10,"output_tokens":5}}"#
            )
        );
        gw.shutdown().await;
        drop(up);
    });
}
