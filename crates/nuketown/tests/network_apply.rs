//! `nuketown apply` installs the agents' egress rules in real nftables,
//! matched on each agent's uid, before any agent exists; bad input changes
//! nothing. Real users connect to real servers on 127.0.0.x.

mod fixture;

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;

use fixture::*;

const HUMAN: &str = "nknhuman";
const AGENT: &str = "nknada";
const UID: u32 = 1960;

fn server(addr: &str) -> TcpListener {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let c = l.try_clone().unwrap();
    std::thread::spawn(move || {
        for mut s in c.incoming().flatten() {
            let _ = s.write_all(b"hello");
        }
    });
    l
}

fn reaches(user: &str, ip: &str, port: u16) -> bool {
    let o = as_user(
        user,
        &format!("timeout 20 bash -c 'exec 3<>/dev/tcp/{ip}/{port} && head -c5 <&3'"),
    );
    stdout(&o) == "hello"
}

fn table() -> Option<String> {
    let o = Command::new("nft")
        .args(["list", "table", "inet", APPLY_NFT_TABLE])
        .output()
        .unwrap();
    o.status.success().then(|| stdout(&o))
}

struct DropTable;
impl Drop for DropTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", APPLY_NFT_TABLE])
            .output();
    }
}

#[test]
fn apply_installs_egress_rules_by_uid_and_bad_input_changes_nothing() {
    let t = TestTown::new(&[HUMAN, AGENT], &[]);
    let _table = DropTable;
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", APPLY_NFT_TABLE])
        .output();
    let _a = server("127.0.0.63:18463");
    let _b = server("127.0.0.64:18464");
    let town_with = |egress: &str| {
        format!(
            "{}[agents.{AGENT}]\nuid = {UID}\n[agents.{AGENT}.network]\negress = {egress}\n",
            t.header(HUMAN)
        )
    };

    // Bad input first: nothing changes, not even the agent's user.
    for (egress, says) in [
        (
            "[{ cidr = \"127.0.0.1/8\" }]",
            "agents.nknada.network.egress[0].cidr: \"127.0.0.1/8\" has bits set after the first 8; write \"127.0.0.0/8\"",
        ),
        (
            "[{ host = \"no-such-host.invalid\" }]",
            "agents.nknada.network.egress[0].host: \"no-such-host.invalid\" does not resolve here",
        ),
        ("\"some\"", "\"some\" is not an egress policy; write \"all\", \"none\""),
    ] {
        let town = t.write("town.toml", &town_with(egress));
        let o = t.run(&["apply", town.to_str().unwrap()]);
        assert!(!o.status.success(), "{egress}");
        assert!(stderr(&o).contains(says), "{egress}: {}", stderr(&o));
        assert!(id(&["-u"], AGENT).is_empty(), "no agent was made");
        assert!(table().is_none(), "no rule was installed");
    }
    let old = format!(
        "{}[agents.{AGENT}]\nuid = {UID}\n[agents.{AGENT}.cloud]\negress = [{{ cidr = \"10.0.0.0/8\" }}]\n",
        t.header(HUMAN)
    );
    let town = t.write("town.toml", &old);
    let o = t.run(&["apply", town.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`cloud.egress` moved to `agents.nknada.network.egress`"),
        "{}",
        stderr(&o)
    );

    // An allow-list: the plan says so, apply installs it, by uid.
    let town = t.write(
        "town.toml",
        &town_with("[{ cidr = \"127.0.0.64\", ports = [18464] }]"),
    );
    let town = town.to_str().unwrap();
    let planned = t.ok(&["plan", town]);
    assert!(
        planned.contains(&format!("~ nftables inet {APPLY_NFT_TABLE}")),
        "{planned}"
    );
    t.ok(&["apply", town]);
    let rules = table().expect("the table is installed");
    assert!(
        rules.contains(&format!("elements = {{ {UID} }}")),
        "{rules}"
    );
    assert!(reaches(AGENT, "127.0.0.64", 18464), "declared");
    assert!(!reaches(AGENT, "127.0.0.63", 18463), "not declared");
    assert!(
        reaches(HUMAN, "127.0.0.63", 18463),
        "the human is never affected"
    );
    assert!(
        std::fs::read_to_string(t.path("etc/nftables.nft"))
            .unwrap()
            .contains(&format!("meta skuid {UID} ip daddr 127.0.0.64/32")),
        "kept for the hall"
    );
    // Idempotent.
    let again = t.ok(&["plan", town]);
    assert!(!again.contains("nftables"), "{again}");

    // A broken town after that changes nothing either: the rules stay.
    let bad = t.write("town.toml", &town_with("[{ cidr = \"300.0.0.0/8\" }]"));
    assert!(!t.run(&["apply", bad.to_str().unwrap()]).status.success());
    assert!(reaches(AGENT, "127.0.0.64", 18464));
    assert!(!reaches(AGENT, "127.0.0.63", 18463));

    // "all": the table goes.
    let town = t.write("town.toml", &town_with("\"all\""));
    let applied = t.ok(&["apply", town.to_str().unwrap()]);
    assert!(applied.contains("- nftables"), "{applied}");
    assert!(table().is_none());
    assert!(reaches(AGENT, "127.0.0.63", 18463));
}
