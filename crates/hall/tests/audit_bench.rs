//! How long `nuketown audit --verify` takes over a day's worth of calls
//! through the credential gateway (10,000 `credential` records in the
//! chain). A benchmark, ignored by default: `cargo test --release -p
//! nuketown-hall --test audit_bench -- --ignored --nocapture` (bench/gateway.sh).

use std::time::Instant;

use nuketown_hall::audit::{verify, AuditLog, Record};
use nuketown_hall::protocol::CallView;

#[test]
#[ignore]
fn bench_verify_a_days_worth_of_credential_calls() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::new(&dir.path().join("audit.jsonl"));
    let started = Instant::now();
    for i in 0..10_000u32 {
        let mut r = Record::new(&format!("{i:032x}"), "credential", "ada", 1100);
        r.target = "anthropic".into();
        r.argv = vec!["POST".into(), "api.anthropic.com/v1/messages".into()];
        r.decision = "forwarded".into();
        r.credential = Some(CallView {
            agent: "ada".into(),
            uid: 1100,
            credential: Some("anthropic".into()),
            method: "POST".into(),
            host: "api.anthropic.com".into(),
            path: "/v1/messages".into(),
            model: Some("claude-sonnet-4-5".into()),
            status: 200,
            decision: "forwarded".into(),
            tokens_in: Some(1830),
            tokens_out: Some(412),
            bytes_up: 9120,
            bytes_down: 20455,
            ms: 812.4,
        });
        log.append(&r).unwrap();
    }
    let appended = started.elapsed();
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let v = verify(&text);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(v.breaks.is_empty(), "the chain verifies");
        assert_eq!(v.lines, 10_000);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH audit: 10,000 credential records appended in {:.0} ms ({:.0} µs each, {} bytes); verified in {:.1} ms (median of 5, min {:.1})",
        appended.as_secs_f64() * 1e3,
        appended.as_secs_f64() * 1e6 / 10_000.0,
        text.len(),
        times[2],
        times[0]
    );
}
