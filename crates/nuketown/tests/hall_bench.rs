//! Benchmarks of the town hall (ignored in the normal test run; `bash
//! bench/hall.sh` runs them in release mode and prints `BENCH` lines):
//!
//! 1. `sudo true` through the hall with an autoApprove rule, against plain
//!    `sudo true` (a NOPASSWD rule for /usr/bin/true), both as the same real
//!    agent through real sudo.
//! 2. 1,000 concurrent pending requests: request → approver-notified latency
//!    (p50/p99), all then answered, every requester hearing its decision.
//!    The requests come from this (root) process on the real requester
//!    socket, as 1,000 entry points would send them, so the numbers are the
//!    hall's and not process start-up's.

mod hall_fixture;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hall_fixture::*;
use nuketown_hall::client::{Approver, Requester};
use nuketown_hall::protocol::{ToApprover, ToRequester};

const PLAIN_SUDOERS: &str = "/etc/sudoers.d/nuketown-hall-bench";

struct PlainRule;
impl Drop for PlainRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(PLAIN_SUDOERS);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time (user + system) of every finished child of this process, and their children.
fn children_cpu() -> Duration {
    // Safety: getrusage fills the struct it is given.
    let mut u: nix::libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: nix::libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time of process `pid` so far (from /proc/PID/stat, in clock ticks).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // Safety: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Wall time and CPU time (the loop's processes plus the hall's) for `n`
/// runs of `cmd` as the agent, in one shell (su's start-up counted once):
/// `sh`, or with `bashrc`, a bash that read that file first (as the agent's
/// shells and the commands its CLI runs through bash do).
fn loop_as(
    t: &TestTown,
    user: &str,
    cmd: &str,
    n: usize,
    bashrc: Option<&std::path::Path>,
) -> (Duration, Duration) {
    let (cpu0, hall0) = (children_cpu(), process_cpu(t.hall_pid()));
    let start = Instant::now();
    // From `/`: a rule decides only in a directory root owns.
    let body = format!("cd / && i=0; while [ $i -lt {n} ]; do {cmd} || exit 9; i=$((i+1)); done");
    let o = t.agent(
        user,
        &match bashrc {
            Some(rc) => format!("exec bash --norc -c '. {}; {body}'", rc.display()),
            None => body,
        },
    );
    let took = start.elapsed();
    assert!(o.status.success(), "{cmd}: {}", stderr(&o));
    let cpu = (children_cpu() - cpu0) + (process_cpu(t.hall_pid()) - hall0);
    (took, cpu)
}

#[test]
#[ignore]
fn sudo_true_through_the_hall_vs_plain_sudo() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let _plain = PlainRule;
    nuketown_host::sudoers::install(
        std::path::Path::new(nuketown_host::sudoers::MAIN),
        std::path::Path::new(PLAIN_SUDOERS),
        &format!("{ADA} ALL = (root) NOPASSWD: /usr/bin/true\n"),
    )
    .unwrap();
    let n = 200;
    // The agent's ~/.bashrc as apply writes it: the shim on PATH, `sudo` a function.
    let rc = t.path("bashrc");
    std::fs::write(
        &rc,
        nuketown_host::render::bashrc(ADA, Some((&t.shim_dir, &t.elevate))),
    )
    .unwrap();
    // Warm both paths, then alternate batches so drift hits both alike.
    loop_as(&t, ADA, "/usr/bin/sudo -n /usr/bin/true", 10, None);
    loop_as(&t, ADA, "sudo true", 10, None);
    loop_as(&t, ADA, "sudo true", 10, Some(&rc));
    let (mut plain, mut hall, mut no_shim) = (Vec::new(), Vec::new(), Vec::new());
    let (mut plain_cpu, mut hall_cpu, mut no_shim_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let (w, c) = loop_as(&t, ADA, "/usr/bin/sudo -n /usr/bin/true", n, None);
        plain.push(w / n as u32);
        plain_cpu.push(c / n as u32);
        let (w, c) = loop_as(&t, ADA, "sudo true", n, None);
        hall.push(w / n as u32);
        hall_cpu.push(c / n as u32);
        let (w, c) = loop_as(&t, ADA, "sudo true", n, Some(&rc));
        no_shim.push(w / n as u32);
        no_shim_cpu.push(c / n as u32);
    }
    for v in [
        &mut plain,
        &mut hall,
        &mut no_shim,
        &mut plain_cpu,
        &mut hall_cpu,
        &mut no_shim_cpu,
    ] {
        v.sort();
    }
    let (p, h, d) = (plain[2], hall[2], no_shim[2]);
    let (pc, hc, dc) = (plain_cpu[2], hall_cpu[2], no_shim_cpu[2]);
    println!(
        "BENCH sudo_true wall: plain_ms={:.2} sh_shim_ms={:.2} ratio={:.2} bash_function_ms={:.2} ratio={:.2}; cpu: plain_ms={:.2} sh_shim_ms={:.2} ratio={:.2} bash_function_ms={:.2} ratio={:.2} (medians of 5 batches of {n})",
        ms(p),
        ms(h),
        h.as_secs_f64() / p.as_secs_f64(),
        ms(d),
        d.as_secs_f64() / p.as_secs_f64(),
        ms(pc),
        ms(hc),
        hc.as_secs_f64() / pc.as_secs_f64(),
        ms(dc),
        dc.as_secs_f64() / pc.as_secs_f64()
    );
    // The hall's own share: a policy-approved request straight on its socket, as root.
    let mut rt = Vec::new();
    let ask = nuketown_hall::files::prepare(vec!["/usr/bin/true".into()], "/", "root", ADA_UID)
        .unwrap()
        .ask;
    for _ in 0..1000 {
        let start = Instant::now();
        let mut r =
            Requester::connect(std::path::Path::new(nuketown_hall::REQUESTER_SOCKET)).unwrap();
        r.ask(ask.clone()).unwrap();
        match r.recv().unwrap() {
            ToRequester::Decision {
                id, approved: true, ..
            } => r.exit(&id, 0).unwrap(),
            other => panic!("{other:?}"),
        }
        rt.push(start.elapsed());
    }
    rt.sort();
    println!(
        "BENCH hall_policy_roundtrip p50_ms={:.3} p99_ms={:.3}",
        ms(percentile(&rt, 0.5)),
        ms(percentile(&rt, 0.99))
    );
    // All through the policy, none through a human.
    assert!(t
        .audit()
        .iter()
        .all(|r| r.decided_by.as_ref().unwrap().channel == "policy"));
}

#[test]
#[ignore]
fn a_thousand_pending_requests() {
    let mut t = TestTown::new(Options::default());
    // The town file ends in vox's sudo table: let vox have them all waiting.
    let mut town = std::fs::read_to_string(&t.town).unwrap();
    town.push_str("maxPending = 1000\n");
    std::fs::write(&t.town, town).unwrap();
    t.start_hall();
    for (mode, pace) in [
        ("burst", None),
        ("paced_1ms", Some(Duration::from_millis(1))),
    ] {
        let n = 1000;
        let mut watcher = Approver::connect(&t.approver_socket()).unwrap();
        watcher.set_timeout(Some(DEADLINE)).unwrap();
        assert!(watcher.watch("terminal").unwrap().is_empty());
        // The watcher notes when each request reaches it, on its own thread.
        let (tx, rx) = mpsc::channel::<(usize, Instant)>();
        let reader = std::thread::spawn(move || {
            let mut seen = 0;
            while seen < n {
                if let ToApprover::Request { request } = watcher.recv().unwrap() {
                    let _ = tx.send((request.argv[1].parse().unwrap(), Instant::now()));
                    seen += 1;
                }
            }
            watcher
        });
        let mut sent = Vec::with_capacity(n);
        let mut requesters = Vec::with_capacity(n);
        let begin = Instant::now();
        for i in 0..n {
            if let Some(p) = pace {
                while begin.elapsed() < p * i as u32 {
                    std::hint::spin_loop();
                }
            }
            let mut r =
                Requester::connect(std::path::Path::new(nuketown_hall::REQUESTER_SOCKET)).unwrap();
            r.set_timeout(Some(DEADLINE)).unwrap();
            sent.push(Instant::now());
            r.ask(
                nuketown_hall::files::prepare(
                    vec!["/usr/bin/echo".into(), i.to_string()],
                    "/",
                    "root",
                    VOX_UID,
                )
                .unwrap()
                .ask,
            )
            .unwrap();
            requesters.push(r);
        }
        let watcher = reader.join().unwrap();
        let notified: HashMap<usize, Instant> = rx.try_iter().collect();
        assert_eq!(notified.len(), n, "every request reached the approver");
        let mut lat: Vec<Duration> = (0..n).map(|i| notified[&i] - sent[i]).collect();
        lat.sort();
        // Every one pending at once; now answer them all.
        let mut decider = Approver::connect(&t.approver_socket()).unwrap();
        decider.set_timeout(Some(DEADLINE)).unwrap();
        let pending = decider.list().unwrap();
        assert_eq!(pending.len(), n);
        let answer_start = Instant::now();
        for r in &pending {
            decider
                .decide(
                    r,
                    r.argv[1].parse::<usize>().unwrap() % 2 == 0,
                    None,
                    "terminal",
                )
                .unwrap();
        }
        for (i, r) in requesters.iter_mut().enumerate() {
            loop {
                match r.recv().unwrap() {
                    ToRequester::Pending { .. } => continue,
                    ToRequester::Decision { approved, .. } => {
                        assert_eq!(approved, i % 2 == 0, "request {i}");
                        break;
                    }
                }
            }
        }
        let answered = answer_start.elapsed();
        drop(watcher);
        println!(
            "BENCH pending_{mode} n={n} notified_p50_ms={:.2} p99_ms={:.2} max_ms={:.2} send_all_ms={:.1} answer_all_ms={:.1}",
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap()),
            ms(sent[n - 1] - sent[0]),
            ms(answered)
        );
        drop(requesters);
    }
}
