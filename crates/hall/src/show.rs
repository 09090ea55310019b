//! What an approver must see about a request, the same on every channel
//! (terminal, desktop dialog, Matrix): the facts as (label, text) lines, every
//! string an agent can influence escaped. Here, beside the protocol, so the
//! terminal and desktop approvers need no Matrix client to show them.

use nuketown_town::display::{clean, show_argv, show_str};

use crate::protocol::RequestView;

/// How long after a request is shown an answer starts to count, by default
/// (ms). A keystroke, click, reply or reaction that lands sooner was aimed at
/// whatever was on screen before: it never decides. Override with
/// `NUKETOWN_APPROVER_SETTLE_MS` or `nuketown approvals --settle-ms`.
pub const DEFAULT_SETTLE_MS: u64 = 1000;

/// The shortest request-id prefix a human may type (the 8 digits every channel shows).
pub const MIN_PREFIX: usize = 8;

/// The first 8 digits of a request id, as every channel shows it.
pub fn short_id(id: &str) -> String {
    clean(&id.chars().take(MIN_PREFIX).collect::<String>())
}

/// `st_dev` as `major:minor` (the Linux encoding glibc uses).
pub fn device(dev: u64) -> String {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    format!("{major}:{minor}")
}

/// What a request asks for, in a few words, after the agent's name, the
/// same on every channel: `asks to run a command as "root"`, `asks for
/// network access`, `asks to use its key`, `asks for a bigger tier`, `asks,
/// for its CLI (claude-code), to use a tool`.
pub fn asks(r: &RequestView) -> String {
    if r.resources.is_some() {
        "asks for a bigger tier".into()
    } else if r.network.is_some() {
        "asks for network access".into()
    } else if r.key_use.is_some() {
        "asks to use its key".into()
    } else if let Some(t) = &r.tool {
        format!("asks, for its CLI ({}), to use a tool", clean(&t.cli))
    } else if let Some(m) = &r.more {
        format!(
            "asks for more of its credential {}",
            show_str(&m.credential)
        )
    } else {
        format!("asks to run a command as {}", show_str(&r.user))
    }
}

/// Everything an approver must see about a request, on every channel
/// (terminal, desktop, Matrix), as (label, text) lines. Every string the agent
/// can influence is escaped: argv and paths quoted with `show_str`, the
/// hall's warnings (which quote agent text) with `clean`. Every warning the
/// hall sent is here, verbatim.
pub fn facts(r: &RequestView) -> Vec<(&'static str, String)> {
    let agent = clean(&r.agent);
    if let Some(k) = &r.key_use {
        return key_facts(r, k);
    }
    if let Some(n) = &r.network {
        return network_facts(r, n);
    }
    if let Some(x) = &r.resources {
        return resources_facts(r, x);
    }
    if let Some(t) = &r.tool {
        return tool_facts(r, t);
    }
    if let Some(m) = &r.more {
        return more_facts(r, m);
    }
    let mut f = vec![
        ("run", show_argv(&r.argv)),
        (
            "as",
            format!(
                "{}{}",
                show_str(&r.user),
                r.group
                    .as_ref()
                    .map(|g| format!(", group {}", show_str(g)))
                    .unwrap_or_default()
            ),
        ),
        ("in", show_str(&r.cwd)),
        (
            "program",
            if r.agent_can_write {
                format!(
                    "{} (only a human may decide: not all it runs and reads is proven root's, so {agent} may change some of it)",
                    show_str(&r.program.path)
                )
            } else {
                format!(
                    "{} (proven root's: {agent} cannot change it or what it reads)",
                    show_str(&r.program.path)
                )
            },
        ),
        (
            "file",
            format!(
                "device {}, inode {} (the very file that will run)",
                device(r.program.dev),
                r.program.ino
            ),
        ),
    ];
    if let Some(t) = &r.typed {
        f.push((
            "typed",
            format!("{} (how {agent} named the program)", show_str(t)),
        ));
    }
    if !r.agent_writable_args.is_empty() {
        f.push((
            "files",
            format!(
                "{} (arguments that may name files not proven root's)",
                r.agent_writable_args
                    .iter()
                    .map(|a| show_str(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for w in &r.warnings {
        f.push(("WARNING", clean(w)));
    }
    for n in &r.notes {
        f.push(("note", clean(n)));
    }
    f.push((
        "grant",
        if r.grantable {
            "possible: a duration approves this exact command for that long".to_string()
        } else {
            "none: approving approves it this once".to_string()
        },
    ));
    f
}

/// The facts of a use of an agent's key: what would be signed, for whom,
/// by which process, under which rule. Nothing runs; the key signs once.
fn key_facts(r: &RequestView, k: &crate::protocol::KeyUseView) -> Vec<(&'static str, String)> {
    let agent = clean(&r.agent);
    let opt = |o: &Option<String>| o.as_deref().map(show_str).unwrap_or_else(|| "?".into());
    let mut f = vec![(
        "use",
        match k.operation.as_str() {
            "sign" => format!(
                "sign with {agent}'s key, namespace {}{}",
                opt(&k.namespace),
                if k.namespace.as_deref() == Some("git") {
                    " (a git commit or tag)"
                } else {
                    ""
                }
            ),
            "authenticate" => format!(
                "log in with {agent}'s key as {} to {}",
                opt(&k.remote_user),
                match (&k.host, &k.host_key) {
                    (Some(h), _) => format!("{} (declared in keys.hosts)", show_str(h)),
                    (None, Some(key)) => format!(
                        "a host the town does not declare, host key {}",
                        show_str(key)
                    ),
                    (None, None) => "a host the town could not identify".into(),
                }
            ),
            other => format!("{} with {agent}'s key", show_str(other)),
        },
    )];
    if let Some(h) = &k.message_hash {
        f.push(("message", format!("hash {}", clean(h))));
    }
    f.push(("key", clean(&k.key)));
    f.push((
        "signs",
        format!("bytes with sha256 {}", clean(&k.data_sha256)),
    ));
    f.push((
        "caller",
        format!("{} (pid {})", show_argv(&r.argv), k.caller_pid),
    ));
    if !k.parent.is_empty() {
        f.push(("parent", show_argv(&k.parent)));
    }
    if !k.rule.is_empty() {
        f.push(("rule", clean(&k.rule)));
    }
    for w in &r.warnings {
        f.push(("WARNING", clean(w)));
    }
    for n in &r.notes {
        f.push(("note", clean(n)));
    }
    f.push(("grant", "none: approving signs this once".to_string()));
    f
}

/// Milliseconds as seconds for people: `1`, `0.5`, `2.25`.
pub fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        format!("{}", ms as f64 / 1000.0)
    }
}

/// The facts of a tool the agent's CLI asks to use: which CLI, which tool,
/// its exact input (escaped), and what approving does — runs it once, as
/// the agent, never as root.
fn tool_facts(r: &RequestView, t: &crate::protocol::ToolView) -> Vec<(&'static str, String)> {
    let agent = clean(&r.agent);
    let mut f = vec![
        ("cli", clean(&t.cli)),
        ("tool", show_str(&t.tool)),
        ("input", show_str(&t.input)),
        (
            "means",
            format!("approving lets {agent}'s CLI use this tool once, as {agent} (not as root); a denial is told to the CLI"),
        ),
    ];
    for w in &r.warnings {
        f.push(("WARNING", clean(w)));
    }
    f.push(("grant", "none: approving allows it this once".to_string()));
    f
}

/// The facts of a request for more of a credential: which, its limits,
/// what it used, why (the agent's words, escaped), and exactly what
/// approving adds.
fn more_facts(r: &RequestView, m: &crate::protocol::MoreView) -> Vec<(&'static str, String)> {
    let agent = clean(&r.agent);
    let mut add = Vec::new();
    if m.requests > 0 {
        add.push(format!("{} requests", m.requests));
    }
    if m.tokens > 0 {
        add.push(format!("{} tokens", m.tokens));
    }
    let mut f = vec![
        ("credential", format!("{} ({})", show_str(&m.credential), clean(&m.api))),
        ("limits", clean(&m.limits)),
        ("used", clean(&m.used)),
        ("reason", show_str(&m.reason)),
        (
            "means",
            format!(
                "approving lets {agent} use it for {} more, until the day's window passes; the key itself stays the town's",
                add.join(" and ")
            ),
        ),
    ];
    for w in &r.warnings {
        f.push(("WARNING", clean(w)));
    }
    f
}

/// The facts of a request for network access: where, which ports, for how
/// long, why (the agent's words, escaped), what the agent may reach now, and
/// exactly the rule approving adds.
fn network_facts(r: &RequestView, n: &crate::protocol::NetworkView) -> Vec<(&'static str, String)> {
    let agent = clean(&r.agent);
    let mut f = vec![(
        "reach",
        format!(
            "{} — {} {} over TCP and UDP",
            show_str(&n.target),
            n.networks
                .iter()
                .map(|x| clean(x))
                .collect::<Vec<_>>()
                .join(", "),
            match n.port {
                Some(p) => format!("port {p}"),
                None => "every port".into(),
            }
        ),
    )];
    f.push((
        "for",
        format!(
            "{} ({} s), then the rule is removed by itself",
            nuketown_town::network::show_duration(n.secs),
            n.secs
        ),
    ));
    f.push((
        "why",
        if n.reason.is_empty() {
            "(no reason given)".into()
        } else {
            format!("{} ({agent}'s words)", show_str(&n.reason))
        },
    ));
    f.push(("now", format!("{agent} may reach {}", clean(&n.declared))));
    f.push(("rule", clean(n.rule.trim()).replace('\n', "; ")));
    for w in &r.warnings {
        f.push(("WARNING", clean(w)));
    }
    f.push((
        "grant",
        "none: approving opens this once, for the time shown".to_string(),
    ));
    f
}

/// The facts of a request for a bigger tier: from what to what, how big
/// that is, how far the agent may go, why (the agent's words, escaped),
/// where it was asked, and exactly what approving writes.
fn resources_facts(
    r: &RequestView,
    x: &crate::protocol::ResourcesView,
) -> Vec<(&'static str, String)> {
    let agent = clean(&r.agent);
    let mut f = vec![
        (
            "move",
            format!(
                "{agent}'s workload in the cluster from {} to {} ({})",
                show_str(&x.current),
                show_str(&x.tier),
                clean(&x.size)
            ),
        ),
        (
            "limits",
            format!(
                "declared {}, at most {} (cloud.scaling.maxResources); back to {} when idle",
                show_str(&x.declared),
                show_str(&x.max),
                show_str(&x.declared)
            ),
        ),
        (
            "why",
            if x.reason.is_empty() {
                "(no reason given)".into()
            } else {
                format!("{} ({agent}'s words)", show_str(&x.reason))
            },
        ),
        ("from", clean(&x.origin)),
        ("writes", clean(&x.rule)),
    ];
    for w in &r.warnings {
        f.push(("WARNING", clean(w)));
    }
    for n in &r.notes {
        f.push(("note", clean(n)));
    }
    f.push((
        "grant",
        "none: approving moves it once; it returns by itself when idle".to_string(),
    ));
    f
}
