//! What the gateway costs: added latency per small request, time to the
//! first streamed byte, and 1,000 concurrent SSE streams. Prints lines
//! starting `BENCH`. Run: `cargo bench -p nuketown-gateway --bench gateway`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nuketown_gateway::Gateway;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn timed<C>(
    client: &Client<C, Full<Bytes>>,
    url: &str,
    n: usize,
    first_byte: bool,
) -> Vec<Duration>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                b"{\"model\":\"claude-test\"}",
            )))
            .unwrap();
        let response = client.request(req).await.unwrap();
        assert!(response.status().is_success());
        let mut body = response.into_body();
        let mut elapsed = None;
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            if first_byte && elapsed.is_none() {
                elapsed = Some(start.elapsed());
            }
        }
        out.push(elapsed.unwrap_or_else(|| start.elapsed()));
    }
    out.sort();
    out
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let up = upstream().await;
        let (gw, mut events) = Gateway::start(config(&up, None)).await.unwrap();
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let through = client();
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates({
                let mut roots = rustls::RootCertStore::empty();
                roots.add(certificate_der(&up.ca_pem)).unwrap();
                roots
            })
            .with_no_client_auth();
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        let direct: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let gw_url = |p: &str| format!("http://{}/anthropic{p}", gw.local_addr());
        let up_url = |p: &str| format!("{}{p}", up.url());
        // Drain what the upstream records so memory stays flat.
        let drain_seen = async { while up.seen.lock().await.try_recv().is_ok() {} };

        timed(&through, &gw_url("/v1/messages"), 200, false).await;
        timed(&direct, &up_url("/v1/messages"), 200, false).await;
        let n = 2000;
        let g = timed(&through, &gw_url("/v1/messages"), n, false).await;
        let d = timed(&direct, &up_url("/v1/messages"), n, false).await;
        drain_seen.await;
        println!("BENCH small request x{n} keep-alive: through p50 {:.0}us p99 {:.0}us; direct p50 {:.0}us p99 {:.0}us; added p50 {:.0}us p99 {:.0}us",
            percentile(&g, 0.5), percentile(&g, 0.99), percentile(&d, 0.5), percentile(&d, 0.99),
            percentile(&g, 0.5) - percentile(&d, 0.5), percentile(&g, 0.99) - percentile(&d, 0.99));

        let g = timed(&through, &gw_url("/v1/sse"), 500, true).await;
        let d = timed(&direct, &up_url("/v1/sse"), 500, true).await;
        while up.seen.lock().await.try_recv().is_ok() {}
        println!("BENCH time to first streamed byte x500: through p50 {:.0}us p99 {:.0}us; direct p50 {:.0}us p99 {:.0}us",
            percentile(&g, 0.5), percentile(&g, 0.99), percentile(&d, 0.5), percentile(&d, 0.99));

        let streams = 1000;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let c = client();
            let url = gw_url("/v1/sse");
            tasks.push(tokio::spawn(async move {
                let req = http::Request::post(url).body(Full::new(Bytes::from_static(b"{\"model\":\"claude-test\",\"stream\":true}"))).unwrap();
                let response = c.request(req).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                body.windows(12).any(|w| w == b"message_stop")
            }));
        }
        let mut complete = 0;
        for t in tasks {
            if t.await.unwrap() {
                complete += 1;
            }
        }
        println!("BENCH {streams} concurrent SSE streams (one connection each): {complete} complete in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
        gw.shutdown().await;
    });
}
