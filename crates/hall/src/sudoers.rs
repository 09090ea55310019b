//! The sudoers drop-in (`/etc/sudoers.d/nuketown`): each agent with
//! `sudo.enable` may run exactly the entry point, as root, without a password
//! and without setting environment variables. Never `ALL`.
//!
//! It defines no alias: sudoers aliases are global names, and a second
//! drop-in defining the same one (another town's, a test's) would make the
//! whole configuration invalid — and every `sudo` on the host fail. Users
//! are listed where they are meant. `nuketown apply` installs it only after
//! `visudo` accepts the host's whole configuration with it in place.

use std::fmt::Write as _;
use std::path::Path;

use nuketown_town::Town;

/// A path written for sudoers: backslash before the characters sudoers gives
/// a meaning (`,` `:` `=` `\` space and friends). `None` for a path sudoers
/// cannot name (relative, or holding control characters).
pub fn escape_path(path: &Path) -> Option<String> {
    let s = path.to_str()?;
    if !s.starts_with('/') || s.chars().any(char::is_control) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            ',' | ':' | '=' | '\\' | ' ' | '(' | ')' | '!' | '#' | '"' | '*' | '?' | '[' | ']'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    Some(out)
}

/// The drop-in for `town`. It passes `visudo -cf`; with no agent allowed to
/// ask (or an entry point path sudoers cannot name) it grants nothing.
pub fn render(town: &Town) -> String {
    let mut s = String::from(
        "# Written by nuketown apply; do not edit: apply rewrites it.\n\
         # Agents reach root only through the town hall: each may run exactly the\n\
         # entry point, as root, without a password and without setting environment\n\
         # variables. The entry point asks a human about the exact command.\n",
    );
    let agents: Vec<&str> = town
        .host_agents()
        .filter(|(_, a)| a.sudo.enable)
        .map(|(n, _)| n.as_str())
        .filter(|n| nuketown_town::is_unix_name(n))
        .collect();
    let Some(elevate) = escape_path(&town.hall.elevate_path) else {
        s.push_str("# hall.elevatePath cannot be named in sudoers: nothing is granted.\n");
        return s;
    };
    if agents.is_empty() {
        s.push_str("# No agent has sudo.enable: nothing is granted.\n");
        return s;
    }
    let users = agents.join(", ");
    let _ = writeln!(s, "Defaults!{elevate} env_reset, !setenv");
    let _ = writeln!(s, "Defaults:{users} !setenv");
    let _ = writeln!(s, "{users} ALL = (root) NOPASSWD: NOSETENV: {elevate}");
    s
}

/// With `humanAsAgents` (the default): `humanUser` may run any command *as*
/// each enabled agent — `sudo -u ada -i`, which the portal uses — without a
/// password; never as root or any other user, and with no group of its
/// choosing. What runs as an agent gets a terminal of its own (`use_pty`):
/// an agent's process never holds the human's terminal, where it could push
/// keystrokes into the human's shell (`TIOCSTI`). Empty when there is no
/// human, no agent, or the grant is off.
pub fn human_grant(town: &Town) -> String {
    let Some(human) = town
        .human_user
        .as_deref()
        .filter(|h| town.human_as_agents && nuketown_town::is_unix_name(h))
    else {
        return String::new();
    };
    let agents: Vec<&str> = town
        .host_agents()
        .map(|(n, _)| n.as_str())
        .filter(|n| nuketown_town::is_unix_name(n) && *n != "root" && *n != human)
        .collect();
    if agents.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "# humanAsAgents: the town's human may run commands as its agents (never as\n\
         # root), without a password: `sudo -u AGENT -i`, and the portal's agent pane;\n\
         # always in a terminal of their own, never the human's.\n",
    );
    let users = agents.join(", ");
    let _ = writeln!(s, "Defaults>{users} use_pty");
    let _ = writeln!(s, "{human} ALL = ({users}) NOPASSWD: ALL");
    s
}
