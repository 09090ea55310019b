//! What an agent may reach, with real nftables on this host: the town's
//! rules matched on each agent's uid (`meta skuid`), a real town hall, real
//! users connecting to real servers on 127.0.0.x, and a human approving a
//! `nuketown ask network` request with the real approver CLI.
//!
//! Root is required (users, nftables); every rule lives in the tests' own
//! table (`inet nuketown_hall_test`), removed when the test ends.

mod hall_fixture;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Instant;

use hall_fixture::*;
use nuketown_hall::audit::Record;

/// A server on `addr` that greets every connection with `hello`.
fn server(addr: &str) -> TcpListener {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let c = l.try_clone().unwrap();
    std::thread::spawn(move || {
        for s in c.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"hello");
        }
    });
    l
}

/// Whether `user` (a real Unix user) gets the greeting from `ip:port`.
fn reaches(t: &TestTown, user: &str, ip: &str, port: u16) -> bool {
    let o = t.agent(
        user,
        &format!("timeout 20 bash -c 'exec 3<>/dev/tcp/{ip}/{port} && head -c5 <&3'"),
    );
    stdout(&o) == "hello"
}

/// Whether this root process gets the greeting.
fn root_reaches(ip: &str, port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect((ip, port)) else {
        return false;
    };
    let mut b = [0u8; 5];
    s.read_exact(&mut b).is_ok() && &b == b"hello"
}

/// `nuketown ask ARGS` as `user`, on this town's ask socket.
fn ask_script(t: &TestTown, args: &str) -> String {
    format!(
        "NUKETOWN_ASK_SOCKET={} {} ask {args}",
        t.ask_socket().display(),
        t.nuketown.display()
    )
}

/// The elements of the tests' grant set, as nft lists them.
fn grants() -> String {
    let o = Command::new("nft")
        .args(["list", "set", "inet", NFT_TABLE, "grants4"])
        .output()
        .unwrap();
    let text = stdout(&o);
    text.split_once("elements")
        .map(|(_, e)| e.to_string())
        .unwrap_or_default()
}

fn network_records(t: &TestTown, id: &str) -> Vec<Record> {
    nuketown_hall::audit::AuditLog::read(&t.audit_log())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.event == "network" && r.id == id)
        .collect()
}

/// Install the town's rules the way `apply` renders them, for the hall to load.
fn write_rules(t: &TestTown) {
    write_rules_with(
        t,
        &nuketown_town::network::host_resolvers(std::path::Path::new("/etc/resolv.conf")),
    );
}

/// The same, with `resolvers` as the host's DNS servers.
fn write_rules_with(t: &TestTown, resolvers: &[std::net::IpAddr]) {
    let town = nuketown_town::load(&t.town).unwrap();
    let rules = nuketown_town::network::ruleset(
        &town,
        NFT_TABLE,
        &|h| Err(format!("{h}: no names in this test")),
        resolvers,
    )
    .unwrap();
    std::fs::write(t.nftables_file(), rules).unwrap();
}

/// Wait (on the hall's own timer; the audit log is the signal) until
/// request `id`'s grant is recorded expired; that record.
fn expiry(t: &TestTown, id: &str) -> Record {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(r) = network_records(t, id)
            .into_iter()
            .find(|x| x.decision == "expired")
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no expiry recorded for {id}");
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
}

/// Red team, class 5: `egress = "none"` reaches DNS only at the agent's
/// resolvers — the host's, or its own `network.dns` — never "anything on
/// port 53", which is a whole TCP exchange with any server.
#[test]
fn a_restricted_agent_reaches_port_53_only_at_its_resolvers() {
    let mut t = TestTown::new(Options {
        ada_network: "egress = \"none\"\n".into(),
        vox_network: "egress = \"none\"\ndns = [\"127.0.0.64\"]\n".into(),
        ..Options::default()
    });
    let _resolver = server("127.0.0.63:53");
    let _other = server("127.0.0.64:53");
    write_rules_with(&t, &["127.0.0.63".parse().unwrap()]);
    t.start_hall();
    assert!(reaches(&t, ADA, "127.0.0.63", 53), "the host's resolver");
    assert!(
        !reaches(&t, ADA, "127.0.0.64", 53),
        "another server on port 53"
    );
    assert!(reaches(&t, VOX, "127.0.0.64", 53), "vox's own resolver");
    assert!(!reaches(&t, VOX, "127.0.0.63", 53), "vox declared its own");
    assert!(
        reaches(&t, HUMAN, "127.0.0.64", 53),
        "the human is never matched"
    );
}

/// Red team, class 7: a grant's expiry never removes a later grant of the
/// same access, which was asked and approved while the first still ran.
#[test]
fn an_earlier_grants_expiry_never_cuts_a_later_one_short() {
    let mut t = TestTown::new(Options {
        ada_network: "egress = \"none\"\n".into(),
        ..Options::default()
    });
    let _a = server("127.0.0.65:18465");
    write_rules(&t);
    t.start_hall();
    let mut w = t.watch();
    let mut grant = |secs: &str| {
        let child = t.spawn_agent(
            ADA,
            &ask_script(&t, &format!("network 127.0.0.65:18465 --for {secs}")),
        );
        let r = next_request(&mut w);
        let o = t.human(HUMAN, &format!("approvals approve {}", r.id));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(finish(child).status.success());
        r.id
    };
    let first = grant("5s");
    let second = grant("10m");
    assert!(reaches(&t, ADA, "127.0.0.65", 18465));
    let gone = expiry(&t, &first);
    assert_eq!(
        gone.result.as_deref(),
        Some("rule kept: a later grant of the same access runs longer"),
        "{gone:?}"
    );
    assert!(
        reaches(&t, ADA, "127.0.0.65", 18465),
        "the later grant still stands"
    );
    assert!(network_records(&t, &second)
        .iter()
        .all(|r| r.decision == "approved"));
}

#[test]
fn an_agent_reaches_a_server_only_after_a_human_approves_and_until_the_time_is_up() {
    let mut t = TestTown::new(Options {
        ada_network: "egress = \"none\"\n".into(),
        vox_network: "egress = [{ cidr = \"127.0.0.62\", ports = [18462] }]\n".into(),
        ..Options::default()
    });
    let _a = server("127.0.0.61:18461");
    let _b = server("127.0.0.62:18462");
    write_rules(&t);
    t.start_hall();

    // Default: ada reaches nothing but DNS and loopback; vox only what it declares.
    assert!(
        !reaches(&t, ADA, "127.0.0.61", 18461),
        "ada is denied by default"
    );
    assert!(!reaches(&t, ADA, "127.0.0.62", 18462));
    assert!(reaches(&t, VOX, "127.0.0.62", 18462), "vox's declared rule");
    assert!(!reaches(&t, VOX, "127.0.0.61", 18461));
    // The human and root are never affected.
    assert!(reaches(&t, HUMAN, "127.0.0.61", 18461));
    assert!(root_reaches("127.0.0.61", 18461));

    // ada cannot widen her own rules.
    let o = t.agent(
        ADA,
        &format!(
            "nft add element inet {NFT_TABLE} grants4 '{{ {ADA_UID} . 127.0.0.61/32 . 18461 }}'"
        ),
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(!reaches(&t, ADA, "127.0.0.61", 18461));

    // Bad input is refused before anything changes, with the fix.
    for (args, says) in [
        ("network 127.0.0.61:99999", "is not a port"),
        (
            "network 127.0.0.61:18461 --for soon",
            "--for: \"soon\" is not a duration",
        ),
        ("network 10.0.0.1/8", "write \"10.0.0.0/8\""),
        ("network 127.0.0.61 --for 2d", "longer than a day"),
    ] {
        let o = t.agent(ADA, &ask_script(&t, args));
        assert!(!o.status.success(), "{args}");
        assert!(stderr(&o).contains(says), "{args}: {}", stderr(&o));
    }
    // Straight to the hall, past the CLI's checks: denied, audited, nothing added.
    let raw = t.path("raw.py");
    std::fs::write(
        &raw,
        "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
         s.sendall(sys.argv[2].encode() + b'\\n')\nprint(s.makefile().readline())\n",
    )
    .unwrap();
    let o = t.agent(
        ADA,
        &format!(
            "/usr/bin/python3 {} {} '{{\"type\":\"network\",\"v\":2,\"target\":\"not a host\",\"secs\":60}}'",
            raw.display(),
            t.ask_socket().display()
        ),
    );
    assert!(
        stdout(&o).contains("\"approved\":false"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("nothing was changed"), "{}", stdout(&o));
    assert_eq!(grants(), "", "nothing was added");

    // Someone who is not an agent is not served at all.
    let o = t.agent(HUMAN, &ask_script(&t, "network 127.0.0.61:18461 --for 1m"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("without a decision: denied"),
        "{}",
        stderr(&o)
    );

    // ada asks; a human sees exactly what would change and denies it.
    let mut w = t.watch();
    let child = t.spawn_agent(
        ADA,
        &ask_script(
            &t,
            "network 127.0.0.61:18461 --for 1m --reason 'fetch the fixture'",
        ),
    );
    let r = next_request(&mut w);
    let n = r.network.clone().expect("a network request");
    assert_eq!((r.agent.as_str(), r.uid), (ADA, ADA_UID));
    assert_eq!(n.target, "127.0.0.61:18461");
    assert_eq!(n.networks, ["127.0.0.61/32"]);
    assert_eq!((n.port, n.secs), (Some(18461), 60));
    assert_eq!(n.reason, "fetch the fixture");
    assert!(n.declared.starts_with("none"), "{n:?}");
    assert!(
        n.rule
            .contains(&format!("{ADA_UID} . 127.0.0.61/32 . 18461 timeout 60s")),
        "{n:?}"
    );
    let listed = stdout(&t.human(HUMAN, "approvals list"));
    for fact in [
        "127.0.0.61:18461",
        "port 18461",
        "1m (60 s)",
        "\"fetch the fixture\"",
    ] {
        assert!(listed.contains(fact), "{fact} not shown:\n{listed}");
    }
    let o = t.human(HUMAN, &format!("approvals deny {}", r.id));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = finish(child);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("denied by nkthuman"), "{}", stderr(&o));
    assert!(!reaches(&t, ADA, "127.0.0.61", 18461));
    assert_eq!(network_records(&t, &r.id)[0].decision, "denied");

    // Asked again, for 3 s, and approved: in force at once, for ada alone, for that alone.
    let child = t.spawn_agent(
        ADA,
        &ask_script(
            &t,
            "network 127.0.0.61:18461 --for 3s --reason 'fetch the fixture'",
        ),
    );
    let r = next_request(&mut w);
    let o = t.human(HUMAN, &format!("approvals approve {}", r.id));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = finish(child);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("nktada may reach 127.0.0.61:18461 for 3s"),
        "{}",
        stdout(&o)
    );
    assert!(
        reaches(&t, ADA, "127.0.0.61", 18461),
        "approved: ada reaches it"
    );
    assert!(
        !reaches(&t, ADA, "127.0.0.62", 18462),
        "only what was asked"
    );
    assert!(!reaches(&t, VOX, "127.0.0.61", 18461), "vox is unaffected");
    let rec = &network_records(&t, &r.id)[0];
    assert_eq!(rec.decision, "approved");
    let by = rec.decided_by.clone().unwrap();
    assert_eq!((by.who.as_str(), by.channel.as_str()), (HUMAN, "terminal"));
    assert_eq!(rec.network.as_ref().unwrap().networks, ["127.0.0.61/32"]);
    let result = rec.result.clone().unwrap();
    assert!(result.starts_with("rule in force "), "{result}");
    eprintln!("approval to rule in force: {result}");

    // When the time is up the hall writes it down, and ada is denied again.
    expiry(&t, &r.id);
    assert!(
        !reaches(&t, ADA, "127.0.0.61", 18461),
        "expired: denied again"
    );
    assert_eq!(grants(), "");

    // A rule given for an hour does not outlive the hall that gave it.
    let child = t.spawn_agent(ADA, &ask_script(&t, "network 127.0.0.61:18461 --for 1h"));
    let r = next_request(&mut w);
    let o = t.human(HUMAN, &format!("approvals approve {}", r.id));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(finish(child).status.success());
    drop(w);
    assert!(reaches(&t, ADA, "127.0.0.61", 18461));
    t.kill_hall();
    t.start_hall();
    assert!(
        !reaches(&t, ADA, "127.0.0.61", 18461),
        "a new hall starts with no temporary rule"
    );
    assert!(reaches(&t, VOX, "127.0.0.62", 18462), "declared rules stay");

    // The audit log's chain holds over the network records.
    let o = t.root_nuketown(&["audit", "--verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
