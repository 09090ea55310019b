//! Prints a real approval-flow transcript (for docs/approvals.md): an agent's
//! `sudo` in one terminal, the human's `nuketown approvals` in another, then
//! `nuketown audit`. Ignored in the normal run:
//!   cargo test -p nuketown --test hall_transcript -- --ignored --nocapture

mod hall_fixture;

use hall_fixture::*;

fn show(who: &str, cmd: &str, o: &std::process::Output) {
    println!("{who}$ {cmd}");
    print!("{}{}", stderr(o), stdout(o));
}

#[test]
#[ignore]
fn approval_flow_transcript() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();

    println!("--- 1. a human approves");
    let agent = t.spawn_agent(ADA, "sudo apt-get --version | head -1");
    let r = next_request(&mut w);
    show(
        HUMAN,
        "nuketown approvals list",
        &t.human(HUMAN, "approvals list"),
    );
    show(
        HUMAN,
        &format!("nuketown approvals approve {}", &r.id[..8]),
        &t.human(HUMAN, &format!("approvals approve {}", &r.id[..8])),
    );
    show(ADA, "sudo apt-get --version | head -1", &finish(agent));

    println!("--- 2. a human denies");
    let agent = t.spawn_agent(ADA, "sudo cat /etc/shadow");
    let r = next_request(&mut w);
    show(
        HUMAN,
        &format!("nuketown approvals deny {}", &r.id[..8]),
        &t.human(HUMAN, &format!("approvals deny {}", &r.id[..8])),
    );
    show(ADA, "sudo cat /etc/shadow", &finish(agent));

    println!("--- 3. the agent's policy decides");
    show(
        ADA,
        "sudo true && echo ok",
        &t.agent(ADA, "sudo true && echo ok"),
    );
    show(
        ADA,
        "sudo rm -rf /var/cache/apt",
        &t.agent(ADA, "sudo rm -rf /var/cache/apt"),
    );

    println!("--- 3b. watching in a terminal");
    let mut watch = t
        .nuketown_as(HUMAN, "approvals watch")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Stream::new(watch.stdout.take().unwrap());
    let mut keys = watch.stdin.take().unwrap();
    let mut seen = out.until("(Ctrl-C to stop)\n");
    let agent = t.spawn_agent(ADA, "sudo id -u");
    seen.push_str(&out.until("(approve it for that long): "));
    type_line(&mut keys, "10m");
    seen.push_str("10m\n");
    seen.push_str(&out.until("approved "));
    seen.push_str(&out.until("\n"));
    println!("{HUMAN}$ nuketown approvals watch\n{seen}");
    show(ADA, "sudo id -u", &finish(agent));
    show(ADA, "sudo id -u", &t.agent(ADA, "sudo id -u"));
    drop(keys);
    let _ = finish(watch);

    println!("--- 4. nobody answers");
    drop(w);
    t.kill_hall();
    let mut t2 = t;
    std::fs::write(
        &t2.town,
        std::fs::read_to_string(&t2.town)
            .unwrap()
            .replace("timeout = 60\nautoApprove", "timeout = 5\nautoApprove"),
    )
    .unwrap();
    t2.start_hall();
    show(ADA, "sudo whoami", &t2.agent(ADA, "sudo whoami"));

    println!("--- 5. the audit log");
    t2.stop_hall();
    show(HUMAN, "nuketown audit", &t2.human(HUMAN, "audit"));
}
