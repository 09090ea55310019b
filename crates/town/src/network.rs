//! What an agent may reach: `agents.<name>.network.egress`, one key for
//! every projection — nftables rules matched on the agent's uid on a host
//! (`nuketown apply`, the NixOS module), the agent's NetworkPolicy in the
//! cluster — and the temporary rules the town hall adds when a human
//! approves a `nuketown ask network` request.
//!
//! Everything here is pure (render, parse, check) except [`nft`], the one
//! place a ruleset is handed to the kernel.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::Town;

/// Network settings of an agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// Where the agent may connect: `"all"`, `"none"` or an allow-list.
    #[serde(default)]
    pub egress: Egress,
    /// The DNS servers (addresses) a restricted agent may ask, on port 53;
    /// default: the host's resolvers (`nameserver` lines of
    /// `/etc/resolv.conf`, read again by every apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
}

/// Where an agent may connect (its DNS servers and loopback always stay usable).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Egress {
    /// Anywhere: no rule for this agent.
    #[default]
    All,
    /// Nowhere but its DNS servers and loopback.
    None,
    /// Its DNS servers, loopback and these destinations.
    Allow(Vec<EgressRule>),
}

impl Egress {
    /// Whether rules restrict this agent at all.
    pub fn restricted(&self) -> bool {
        !matches!(self, Egress::All)
    }

    /// The allow-list (empty for `all` and `none`).
    pub fn rules(&self) -> &[EgressRule] {
        match self {
            Egress::Allow(r) => r,
            _ => &[],
        }
    }
}

impl Serialize for Egress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Egress::All => s.serialize_str("all"),
            Egress::None => s.serialize_str("none"),
            Egress::Allow(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Egress;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\", \"none\" or a list of { cidr = \"10.0.0.0/8\", ports = [443] } / { host = \"github.com\", ports = [443] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Egress, E> {
                match v {
                    "all" => Ok(Egress::All),
                    "none" => Ok(Egress::None),
                    other => Err(E::custom(format!(
                        "{other:?} is not an egress policy; write \"all\", \"none\" or a list like [{{ host = \"github.com\", ports = [443] }}]"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Egress, A::Error> {
                let rules =
                    Vec::<EgressRule>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Egress::Allow(rules))
            }
        }
        d.deserialize_any(V)
    }
}

/// One allowed destination: a network or a host name, and ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// An address or network: `203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// A host name, resolved to its addresses when the rules are installed (hosts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TCP and UDP destination ports; empty means all.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// An IP network: address and prefix length, normalised (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Net {
    /// A single address.
    pub fn host(addr: IpAddr) -> Net {
        Net {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether this is an IPv4 network.
    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parse `203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`; host bits must be zero.
pub fn parse_net(s: &str) -> Result<Net, String> {
    let example = "write e.g. \"10.0.0.0/8\", \"203.0.113.7\" or \"2001:db8::/32\"";
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an address or network; {example}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max && p.chars().all(|c| c.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "{s:?}: the prefix length must be 0–{max}; {example}"
                ))
            }
        },
    };
    let masked = mask(addr, prefix);
    if masked != addr {
        return Err(format!(
            "{s:?} has bits set after the first {prefix}; write \"{masked}/{prefix}\""
        ));
    }
    Ok(Net { addr, prefix })
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Whether `s` is a DNS host name (letters, digits, `-`, dots; not an address).
pub fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.parse::<IpAddr>().is_err()
        && s.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

/// What an agent asks to reach: `HOST`, `HOST:PORT`, `[V6]:PORT`, `CIDR`, `CIDR:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A network, or a host name to resolve.
    pub dest: Dest,
    /// One TCP/UDP port, or all.
    pub port: Option<u16>,
}

/// A destination as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// An address or network.
    Net(Net),
    /// A host name.
    Host(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match &self.dest {
            Dest::Net(n) if n.prefix == if n.is_v4() { 32 } else { 128 } => n.addr.to_string(),
            Dest::Net(n) => n.to_string(),
            Dest::Host(h) => h.clone(),
        };
        let v6 = matches!(&self.dest, Dest::Net(n) if !n.is_v4());
        match (self.port, v6) {
            (Some(p), true) => write!(f, "[{d}]:{p}"),
            (Some(p), false) => write!(f, "{d}:{p}"),
            (None, true) => write!(f, "[{d}]"),
            (None, false) => write!(f, "{d}"),
        }
    }
}

/// Parse what follows `nuketown ask network`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let fix = "write HOST, HOST:PORT, an address, [IPv6]:PORT or a network like 10.0.0.0/8:443";
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not a destination; {fix}"));
    }
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Ok(n),
            _ => Err(format!(
                "{p:?} is not a port: use 1–65535 (or no port for all)"
            )),
        }
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: a '[' without ']'; {fix}"))?;
        let p = match after {
            "" => None,
            a => Some(port(a.strip_prefix(':').ok_or_else(|| {
                format!("{s:?}: expected ':PORT' after ']'; {fix}")
            })?)?),
        };
        (inside.to_string(), p)
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 address or network: no port.
        (s.to_string(), None)
    } else if let Some((h, p)) = s.split_once(':') {
        (h.to_string(), Some(port(p)?))
    } else {
        (s.to_string(), None)
    };
    let dest = if host.contains('/') || host.parse::<IpAddr>().is_ok() {
        Dest::Net(parse_net(&host)?)
    } else if is_host_name(&host) {
        Dest::Host(host.trim_end_matches('.').to_ascii_lowercase())
    } else {
        return Err(format!(
            "{host:?} is neither a host name nor an address; {fix}"
        ));
    };
    Ok(Target { dest, port })
}

/// Parse `90s`, `30m`, `1h`, `1h30m`, `2d` or plain seconds; more than zero.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let fix = "write e.g. \"90s\", \"30m\", \"1h\" or \"1h30m\"";
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("an empty duration; {fix}"));
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{s:?} is not a duration; {fix}"));
    }
    let mut total = 0u64;
    let mut n: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            n = Some(
                n.unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|x| x.checked_add(u64::from(d)))
                    .ok_or_else(|| format!("{s:?} is too long; {fix}"))?,
            );
        } else {
            let mult = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(format!("{s:?} is not a duration; {fix}")),
            };
            let v = n
                .take()
                .ok_or_else(|| format!("{s:?} is not a duration; {fix}"))?;
            total = v
                .checked_mul(mult)
                .and_then(|x| total.checked_add(x))
                .ok_or_else(|| format!("{s:?} is too long; {fix}"))?;
        }
    }
    if n.is_some() {
        return Err(format!("{s:?} ends without a unit; {fix}"));
    }
    if total == 0 {
        return Err(format!("{s:?} is no time at all; {fix}"));
    }
    Ok(total)
}

/// Seconds as people write them: `1h30m`, `90s` → `1m30s`.
pub fn show_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The host's DNS resolvers: the `nameserver` lines of `resolv_conf`
/// (an IPv6 zone such as `%eth0` dropped), in order.
pub fn host_resolvers(resolv_conf: &std::path::Path) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    let mut v: Vec<IpAddr> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|a| seen.insert(*a));
    v
}

/// The DNS servers `network` allows: its own `dns`, else the host's.
pub fn dns_servers(network: &Network, host: &[IpAddr]) -> Vec<IpAddr> {
    match &network.dns {
        Some(list) => list.iter().filter_map(|a| a.parse().ok()).collect(),
        None => host.to_vec(),
    }
}

/// Check `network` of the agent at key path `key` (`agents.ada.network`).
pub fn problems(key: &str, network: &Network) -> Vec<crate::Problem> {
    let mut out = Vec::new();
    let mut fail = |k: String, m: String| out.push(crate::Problem { key: k, message: m });
    for (i, a) in network.dns.iter().flatten().enumerate() {
        if a.parse::<IpAddr>().is_err() {
            fail(
                format!("{key}.dns[{i}]"),
                format!(
                    "{a:?} is not an address; write a resolver's IP address, e.g. \"10.0.0.53\""
                ),
            );
        }
    }
    for (i, r) in network.egress.rules().iter().enumerate() {
        let k = format!("{key}.egress[{i}]");
        match (&r.cidr, &r.host) {
            (Some(c), None) => {
                if let Err(e) = parse_net(c) {
                    fail(format!("{k}.cidr"), e);
                }
            }
            (None, Some(h)) => {
                if !is_host_name(h) {
                    fail(
                        format!("{k}.host"),
                        format!("{h:?} is not a host name; write e.g. \"github.com\" (an address or network goes in cidr)"),
                    );
                }
            }
            (Some(_), Some(_)) => fail(
                k.clone(),
                "has both cidr and host; give one of them (two rules for two destinations)".into(),
            ),
            (None, None) => fail(
                k.clone(),
                "names no destination; add cidr = \"10.0.0.0/8\" or host = \"github.com\"".into(),
            ),
        }
        for (j, p) in r.ports.iter().enumerate() {
            if *p == 0 {
                fail(
                    format!("{k}.ports[{j}]"),
                    "0 is not a port; use 1–65535, or list no ports for all of them".into(),
                );
            }
        }
    }
    out
}

/// The nftables table nuketown owns on a host (`inet nuketown`).
pub const TABLE: &str = "nuketown";

/// The table to use: `NUKETOWN_NFT_TABLE` (tests), else [`TABLE`].
pub fn table_from_env() -> String {
    std::env::var("NUKETOWN_NFT_TABLE")
        .ok()
        .filter(|t| is_table_name(t))
        .unwrap_or_else(|| TABLE.to_string())
}

/// Whether `t` can name an nftables table here (letters, digits, `_`, `-`).
pub fn is_table_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.starts_with(|c: char| c.is_ascii_alphabetic())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The sets holding the hall's temporary rules: (IPv4, IPv6).
pub const GRANT_SETS: (&str, &str) = ("grants4", "grants6");

fn ports_expr(ports: &[u16]) -> String {
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    match p.as_slice() {
        [] => String::new(),
        [one] => format!(" meta l4proto {{ tcp, udp }} th dport {one}"),
        many => format!(
            " meta l4proto {{ tcp, udp }} th dport {{ {} }}",
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The ruleset for the town's agents, as one `nft -f` transaction: it
/// replaces nuketown's chains and its set of restricted uids atomically and
/// leaves the hall's temporary rules (the grant sets) alone. `resolve` turns
/// a declared host name into addresses (apply resolves as it installs);
/// `resolvers` are the host's DNS servers, the only ones a restricted agent
/// may ask unless it declares its own (`network.dns`).
/// With no restricted agent the table is removed.
pub fn ruleset(
    town: &Town,
    table: &str,
    resolve: &dyn Fn(&str) -> Result<Vec<IpAddr>, String>,
    resolvers: &[IpAddr],
) -> Result<String, Vec<crate::Problem>> {
    let t = format!("inet {table}");
    let agents: Vec<(&String, &crate::Agent)> = town
        .host_agents()
        .filter(|(_, a)| a.network.egress.restricted())
        .collect();
    let mut s = String::from(
        "# nuketown: what each agent may reach (agents.<name>.network.egress).\n\
         # Rendered and installed by `nuketown apply`; one transaction.\n",
    );
    s.push_str(&format!("add table {t}\n"));
    if agents.is_empty() {
        s.push_str(&format!("delete table {t}\n"));
        return Ok(s);
    }
    let (g4, g6) = GRANT_SETS;
    s.push_str(&format!(
        "add set {t} restricted {{ type uid; }}\nflush set {t} restricted\n\
         add element {t} restricted {{ {} }}\n",
        agents
            .iter()
            .map(|(_, a)| a.uid.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s.push_str(&format!(
        "add set {t} {g4} {{ type uid . ipv4_addr . inet_service; flags interval, timeout; }}\n\
         add set {t} {g6} {{ type uid . ipv6_addr . inet_service; flags interval, timeout; }}\n"
    ));
    s.push_str(&format!(
        "add chain {t} output {{ type filter hook output priority filter; policy accept; }}\n\
         flush chain {t} output\n\
         add chain {t} agents\n\
         flush chain {t} agents\n\
         # Only packets of a restricted agent's sockets are judged: the human, root\n\
         # and packets without a socket never reach the agents chain.\n\
         add rule {t} output meta skuid @restricted jump agents\n\
         add rule {t} agents oif \"lo\" ip daddr 127.0.0.1 accept\n\
         add rule {t} agents oif \"lo\" ip6 daddr ::1 accept\n\
         # Answers on connections others opened to the agent.\n\
         add rule {t} agents ct direction reply accept\n\
         add rule {t} agents meta l4proto {{ tcp, udp }} meta skuid . ip daddr . th dport @{g4} accept\n\
         add rule {t} agents meta l4proto {{ tcp, udp }} meta skuid . ip6 daddr . th dport @{g6} accept\n"
    ));
    let mut problems = Vec::new();
    for (name, a) in &agents {
        // DNS, to the agent's resolvers only: port 53 elsewhere is any server's.
        for dns in dns_servers(&a.network, resolvers) {
            let fam = if dns.is_ipv4() { "ip" } else { "ip6" };
            s.push_str(&format!(
                "add rule {t} agents meta skuid {} {fam} daddr {dns} meta l4proto {{ tcp, udp }} th dport 53 accept comment \"{name} dns\"\n",
                a.uid
            ));
        }
        for (i, r) in a.network.egress.rules().iter().enumerate() {
            let nets: Vec<Net> = match (&r.cidr, &r.host) {
                (Some(c), _) => match parse_net(c) {
                    Ok(n) => vec![n],
                    Err(e) => {
                        problems.push(crate::Problem {
                            key: format!("agents.{name}.network.egress[{i}].cidr"),
                            message: e,
                        });
                        continue;
                    }
                },
                (None, Some(h)) => match resolve(h) {
                    Ok(addrs) if !addrs.is_empty() => {
                        let mut v: Vec<Net> = addrs.into_iter().map(Net::host).collect();
                        v.sort();
                        v.dedup();
                        v
                    }
                    Ok(_) | Err(_) => {
                        problems.push(crate::Problem {
                            key: format!("agents.{name}.network.egress[{i}].host"),
                            message: format!("{h:?} does not resolve here; fix the name or the host's DNS, or write its network as cidr"),
                        });
                        continue;
                    }
                },
                (None, None) => continue,
            };
            let ports = ports_expr(&r.ports);
            for n in nets {
                let fam = if n.is_v4() { "ip" } else { "ip6" };
                s.push_str(&format!(
                    "add rule {t} agents meta skuid {} {fam} daddr {n}{ports} accept comment \"{name}\"\n",
                    a.uid
                ));
            }
        }
    }
    s.push_str(&format!(
        "add rule {t} agents reject with icmpx type admin-prohibited\n"
    ));
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

/// The `nft -f` lines adding (`add`) or removing (`delete`) one temporary
/// rule for `uid`: each network, `port` (or all), for `secs` seconds (the
/// kernel removes the elements itself when their time is up).
pub fn grant_elements(
    table: &str,
    op: &str,
    uid: u32,
    nets: &[Net],
    port: Option<u16>,
    secs: u64,
) -> String {
    let (g4, g6) = GRANT_SETS;
    let ports = port.map_or("0-65535".to_string(), |p| p.to_string());
    let mut s = String::new();
    for n in nets {
        let set = if n.is_v4() { g4 } else { g6 };
        let timeout = if op == "add" {
            format!(" timeout {secs}s")
        } else {
            String::new()
        };
        s.push_str(&format!(
            "{op} element inet {table} {set} {{ {uid} . {n} . {ports}{timeout} }}\n"
        ));
    }
    s
}

/// Empty the hall's grant sets, if the table exists (the hall does at start).
pub fn flush_grants_script(table: &str) -> String {
    let (g4, g6) = GRANT_SETS;
    format!("flush set inet {table} {g4}\nflush set inet {table} {g6}\n")
}

/// Hand `script` to the kernel with `nft -f -`: all of it or none of it.
pub fn nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the rules (nothing was changed): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether `nft list table inet TABLE` finds the table.
pub fn table_exists(table: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("127.0.0.5:8080").unwrap();
        assert_eq!(t.port, Some(8080));
        assert_eq!(t.to_string(), "127.0.0.5:8080");
        assert_eq!(parse_target("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert_eq!(
            parse_target("2001:db8::/32").unwrap().to_string(),
            "[2001:db8::/32]"
        );
        assert_eq!(
            parse_target("GitHub.com:443").unwrap().to_string(),
            "github.com:443"
        );
        assert_eq!(
            parse_target("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            "",
            "a b",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "host:0",
            "host:99999",
            "host:x",
            "-x-",
            "[::1",
            "1.2.3.4.5",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        for bad in ["", "0", "0s", "1x", "h", "1h3", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(show_duration(5400), "1h30m");
        assert_eq!(show_duration(90), "1m30s");
    }

    #[test]
    fn grant_lines() {
        let n = [parse_net("127.0.0.5").unwrap(), parse_net("::1").unwrap()];
        assert_eq!(
            grant_elements("t", "add", 1100, &n, Some(80), 60),
            "add element inet t grants4 { 1100 . 127.0.0.5/32 . 80 timeout 60s }\n\
             add element inet t grants6 { 1100 . ::1/128 . 80 timeout 60s }\n"
        );
        assert_eq!(
            grant_elements("t", "delete", 1100, &n[..1], None, 60),
            "delete element inet t grants4 { 1100 . 127.0.0.5/32 . 0-65535 }\n"
        );
    }
}
