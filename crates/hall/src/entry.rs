//! The entry point's pure parts: sudo's flags, the exact argv that will run,
//! and what the agent is told. Opening the program is [`crate::files`]'s. The root edge
//! (`nuketown-elevate`) does the I/O around them.

/// The PATH programs are looked up in, and the PATH they run with. Fixed:
/// never the agent's.
pub const SAFE_PATH: &str = "/run/wrappers/bin:/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `sudo` was asked, from its flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    /// `-u USER` (a name, or `#UID`).
    pub user: Option<String>,
    /// `-g GROUP`.
    pub group: Option<String>,
    /// `-i`: a login shell as the target, in its home.
    pub login: bool,
    /// `-s`: a shell as the target.
    pub shell: bool,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// What `sudo` through the town hall accepts.
pub const USAGE: &str = "usage: sudo [-n] [-u USER] [-g GROUP] [-i | -s] [--] COMMAND [ARG…]\n\
Each command goes to the town hall; it runs only after a human (or the agent's\n\
policy) approves exactly that command.";

/// Why the flags were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// `-h`: print the usage and succeed.
    #[error("{USAGE}")]
    Help,
    /// Anything else: print and deny.
    #[error("{0}")]
    Bad(String),
}

/// Parse sudo's flags as the agent typed them after `sudo`.
pub fn parse_flags(args: &[String]) -> Result<Flags, FlagError> {
    let mut f = Flags::default();
    let mut i = 0;
    let bad = |m: String| Err(FlagError::Bad(format!("{m}\n{USAGE}")));
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = |flag: &str| -> Result<String, FlagError> {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| FlagError::Bad(format!("{flag} needs a value\n{USAGE}")))
        };
        match a {
            "--" => {
                f.command = args[i + 1..].to_vec();
                break;
            }
            "-u" | "--user" => f.user = Some(value(a)?),
            "-g" | "--group" => f.group = Some(value(a)?),
            "-i" | "--login" => f.login = true,
            "-s" | "--shell" => f.shell = true,
            // Never a password to ask for, nor a timestamp to keep: these change nothing.
            "-n" | "--non-interactive" | "-H" | "--set-home" | "-S" | "--stdin" => {}
            "-E" | "--preserve-env" => {
                return bad(
                    "the environment never passes to root through the town hall; drop -E".into(),
                )
            }
            "-h" | "--help" => return Err(FlagError::Help),
            s if s.starts_with("--user=") => f.user = Some(s["--user=".len()..].to_string()),
            s if s.starts_with("--group=") => f.group = Some(s["--group=".len()..].to_string()),
            s if s.starts_with("--preserve-env") => return bad(
                "the environment never passes to root through the town hall; drop --preserve-env"
                    .into(),
            ),
            s if s.starts_with("--") => {
                return bad(format!(
                    "sudo option {s} is not available through the town hall"
                ))
            }
            s if s.starts_with('-') && s.len() > 1 => {
                // Bundled short flags, like -nu root or -iu ada.
                let chars = s[1..].char_indices();
                for (j, c) in chars {
                    match c {
                        'n' | 'H' | 'S' => {}
                        'i' => f.login = true,
                        's' => f.shell = true,
                        'h' => return Err(FlagError::Help),
                        'E' => return bad(
                            "the environment never passes to root through the town hall; drop -E"
                                .into(),
                        ),
                        'u' | 'g' => {
                            let rest = &s[1 + j + 1..];
                            let v = if rest.is_empty() {
                                value(&format!("-{c}"))?
                            } else {
                                rest.to_string()
                            };
                            if c == 'u' {
                                f.user = Some(v);
                            } else {
                                f.group = Some(v);
                            }
                            break;
                        }
                        c => {
                            return bad(format!(
                                "sudo option -{c} is not available through the town hall"
                            ))
                        }
                    }
                }
            }
            s if s.contains('=')
                && !s.starts_with('/')
                && s.split('=')
                    .next()
                    .is_some_and(|k| !k.is_empty() && !k.contains('/')) =>
            {
                return bad(format!(
                    "{s}: setting environment variables for root is not allowed"
                ))
            }
            _ => {
                f.command = args[i..].to_vec();
                break;
            }
        }
        i += 1;
    }
    if f.user.as_deref() == Some("") || f.group.as_deref() == Some("") {
        return bad("-u and -g need a name".into());
    }
    if f.login && f.shell {
        return bad("-i and -s cannot go together".into());
    }
    if f.command.is_empty() && !f.login && !f.shell {
        return Err(FlagError::Bad(USAGE.into()));
    }
    Ok(f)
}

/// Quote one word for `sh -c`, as sudo -i/-s do when they hand a command to the shell.
pub fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        nuketown_town::display::sh_quote(s)
    }
}

/// The argv that will run, before the program is resolved: the command, or
/// the target's shell for `-i` / `-s` (with `-c` and the quoted command).
pub fn command_argv(f: &Flags, target_shell: &str) -> Vec<String> {
    if !(f.login || f.shell) {
        return f.command.clone();
    }
    let shell = if target_shell.is_empty() {
        "/bin/sh"
    } else {
        target_shell
    };
    let mut v = vec![shell.to_string()];
    if f.login {
        v.push("-l".into());
    }
    if !f.command.is_empty() {
        v.push("-c".into());
        v.push(
            f.command
                .iter()
                .map(|a| sh_word(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    v
}

/// What the agent is told about a denial, from the hall's reason.
pub fn denial_text(reason: &str) -> String {
    if reason.starts_with("timed out") && !reason.contains("denied") {
        format!("{reason}, denied")
    } else if reason.contains("denied") {
        reason.to_string()
    } else {
        format!("denied: {reason}")
    }
}
