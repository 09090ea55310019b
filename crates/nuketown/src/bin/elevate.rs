//! `nuketown-elevate`: the root entry point. sudoers lets an agent run this
//! program and nothing else; it asks the town hall about the exact command and
//! runs it only on an approval.
//!
//! It trusts nothing the agent controls: the agent is who `SUDO_UID` (set by
//! sudo itself) says; the rest of the environment is ignored; the hall's
//! socket is a fixed path; programs are found on a fixed PATH; the command
//! runs with a clean environment. Any failure — hall down, hall gone
//! mid-request, a malformed or late answer — is a denial.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{execve, fork, ForkResult, Gid, Group, Uid, User};
use nuketown_hall::client::{ClientError, Requester};
use nuketown_hall::entry::{self, FlagError, SAFE_PATH};
use nuketown_hall::protocol::{show_argv, Ask, ToRequester};

/// How long the hall may take to say "pending" (or decide by policy).
const FIRST_ANSWER: Duration = Duration::from_secs(15);
/// Slack over the agent's timeout before giving up on the hall ourselves.
const SLACK: Duration = Duration::from_secs(10);

/// Why we stop: a message and an exit code.
struct Stop(String, u8);

fn deny(msg: impl Into<String>) -> Stop {
    Stop(msg.into(), 1)
}

/// The command's process, for passing on the signals sudo relays to us.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn relay(sig: nix::libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // Safety: kill(2) is async-signal-safe.
        unsafe {
            nix::libc::kill(pid, sig);
        }
    }
}

fn arg_strings() -> Result<Vec<String>, Stop> {
    std::env::args_os()
        .skip(1)
        .map(|a: OsString| {
            String::from_utf8(a.into_vec()).map_err(|_| {
                deny("arguments that are not UTF-8 cannot be shown to an approver exactly; denied")
            })
        })
        .collect()
}

fn cstr(s: &[u8]) -> Result<CString, Stop> {
    CString::new(s).map_err(|_| deny("arguments may not contain NUL; denied"))
}

fn run() -> Result<u8, Stop> {
    if !nix::unistd::getuid().is_root() || !nix::unistd::geteuid().is_root() {
        return Err(Stop(
            "nuketown-elevate is the town hall's entry point and runs through sudo: type `sudo COMMAND`".into(),
            1,
        ));
    }
    // Who asks: sudo sets SUDO_UID itself; nothing else in the environment is believed.
    let sudo_uid: u32 = std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| deny("nuketown-elevate must run through sudo (no SUDO_UID); denied"))?;
    let term = std::env::var("TERM").ok().filter(|t| {
        !t.is_empty()
            && t.len() < 64
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._+".contains(c))
    });

    let flags = match entry::parse_flags(&arg_strings()?) {
        Ok(f) => f,
        Err(FlagError::Help) => return Err(Stop(entry::USAGE.into(), 0)),
        Err(FlagError::Bad(m)) => return Err(deny(m)),
    };
    let target_name = flags.user.clone().unwrap_or_else(|| "root".into());
    let target = match target_name.strip_prefix('#') {
        Some(uid) => uid
            .parse()
            .ok()
            .and_then(|u| User::from_uid(Uid::from_raw(u)).ok().flatten()),
        None => User::from_name(&target_name).ok().flatten(),
    }
    .ok_or_else(|| deny(format!("-u {target_name}: no such user; denied")))?;
    let gid: Gid = match &flags.group {
        Some(g) => {
            let found = match g.strip_prefix('#') {
                Some(n) => n
                    .parse()
                    .ok()
                    .and_then(|n| Group::from_gid(Gid::from_raw(n)).ok().flatten()),
                None => Group::from_name(g).ok().flatten(),
            };
            found
                .ok_or_else(|| deny(format!("-g {g}: no such group; denied")))?
                .gid
        }
        None => target.gid,
    };
    let group_name = flags.group.as_ref().map(|_| {
        Group::from_gid(gid)
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| g.name)
    });
    let shell = target.shell.to_string_lossy().into_owned();
    let cwd = if flags.login {
        target.dir.clone()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
    };
    let cwd_text = cwd
        .to_str()
        .ok_or_else(|| deny("the working directory's name is not UTF-8; denied"))?
        .to_string();

    // The exact argv that will run, program resolved on the fixed PATH.
    let mut argv = entry::command_argv(&flags, &shell);
    argv[0] = entry::resolve(&argv[0], &cwd, SAFE_PATH)
        .map_err(|e| deny(format!("{e}; denied")))?
        .to_str()
        .ok_or_else(|| deny("the program's path is not UTF-8; denied"))?
        .to_string();

    let mut hall = Requester::connect(Path::new(nuketown_hall::REQUESTER_SOCKET)).map_err(|e| match e {
        ClientError::Connect { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            deny("the town hall is not running; denied (an administrator can start it: systemctl start nuketown-hall)")
        }
        e => deny(format!("{e}; denied")),
    })?;
    let _ = hall.set_timeout(Some(FIRST_ANSWER));
    hall.ask(Ask {
        argv: argv.clone(),
        cwd: cwd_text,
        user: target.name.clone(),
        group: group_name,
        sudo_uid,
    })
    .map_err(|e| deny(format!("{e}; denied")))?;
    // The target's groups, looked up while the hall decides (and before any
    // fork: the child only makes syscalls).
    let groups = nix::unistd::getgrouplist(&cstr(target.name.as_bytes())?, gid);

    let mut pending: Option<(String, u64)> = None;
    let (id, say) = loop {
        match hall.recv() {
            Ok(ToRequester::Pending { id, timeout_secs }) => {
                eprintln!(
                    "nuketown: asking a human to approve {} as {} (request {}, up to {timeout_secs} s)…",
                    show_argv(&argv),
                    target.name,
                    &id[..id.len().min(8)]
                );
                let _ = hall.set_timeout(Some(Duration::from_secs(timeout_secs) + SLACK));
                pending = Some((id, timeout_secs));
            }
            Ok(ToRequester::Decision {
                id,
                approved,
                by,
                reason,
                ..
            }) => {
                if pending.as_ref().is_some_and(|(p, _)| *p != id) {
                    return Err(deny("the town hall answered about another request; denied"));
                }
                if !approved {
                    return Err(deny(entry::denial_text(&reason)));
                }
                // Quiet when the agent's own policy or grant approved; say who when a human (or mock) did.
                let human = !matches!(by.channel.as_str(), "policy" | "grant");
                break (id, human.then_some(reason));
            }
            Err(ClientError::TimedOut) => {
                return Err(deny(match pending {
                    Some((_, t)) => format!("timed out after {t} s, denied"),
                    None => "the town hall did not answer; denied".into(),
                }))
            }
            Err(ClientError::Closed) | Err(ClientError::Io(_)) => {
                return Err(deny("the town hall went away before deciding; denied"))
            }
            Err(ClientError::Protocol(_)) => {
                return Err(deny("the town hall's answer was malformed; denied"))
            }
            Err(e) => return Err(deny(format!("{e}; denied"))),
        }
    };
    if let Some(reason) = say {
        eprintln!("nuketown: {reason}");
    }
    let groups = groups.map_err(|e| deny(format!("the groups of {}: {e}; denied", target.name)))?;
    let status = run_as(&argv, &target, gid, &groups, &cwd, &shell, term)?;
    let _ = hall.exit(&id, status);
    Ok(status.clamp(0, 255) as u8)
}

/// Fork, become the target, exec exactly `argv` with a clean environment;
/// wait and return its status (exit code, or 128 + signal).
fn run_as(
    argv: &[String],
    target: &User,
    gid: Gid,
    groups: &[Gid],
    cwd: &Path,
    shell: &str,
    term: Option<String>,
) -> Result<i32, Stop> {
    let mut env = vec![
        format!("PATH={SAFE_PATH}"),
        format!("HOME={}", target.dir.display()),
        format!("USER={}", target.name),
        format!("LOGNAME={}", target.name),
        format!("SHELL={}", if shell.is_empty() { "/bin/sh" } else { shell }),
    ];
    if let Some(t) = term {
        env.push(format!("TERM={t}"));
    }
    let c_argv: Vec<CString> = argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let c_env: Vec<CString> = env
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let c_cwd = cstr(cwd.as_os_str().as_bytes())?;
    // Safety: this process has one thread; the child makes only syscalls before exec.
    match unsafe { fork() }.map_err(|e| deny(format!("fork: {e}; denied")))? {
        ForkResult::Child => {
            let fail = |what: &str, e: nix::Error| -> ! {
                eprintln!("nuketown: {what}: {e}");
                std::process::exit(126)
            };
            if let Err(e) = nix::unistd::setgroups(groups) {
                fail("setgroups", e);
            }
            if let Err(e) = nix::unistd::setgid(gid) {
                fail("setgid", e);
            }
            if let Err(e) = nix::unistd::setuid(target.uid) {
                fail("setuid", e);
            }
            if nix::unistd::chdir(c_cwd.as_c_str()).is_err() {
                let _ = nix::unistd::chdir(c"/");
            }
            let e = execve(&c_argv[0], &c_argv, &c_env).unwrap_err();
            fail(&format!("cannot run {}", argv[0]), e)
        }
        ForkResult::Parent { child } => {
            CHILD.store(child.as_raw(), Ordering::SeqCst);
            // Safety: plain handlers; `relay` only calls kill(2).
            unsafe {
                // The terminal's ^C and ^\ reach the command directly (same process group).
                let _ = signal::signal(Signal::SIGINT, SigHandler::SigIgn);
                let _ = signal::signal(Signal::SIGQUIT, SigHandler::SigIgn);
                // What sudo relays to us is meant for the command.
                for s in [
                    Signal::SIGTERM,
                    Signal::SIGHUP,
                    Signal::SIGUSR1,
                    Signal::SIGUSR2,
                ] {
                    let _ = signal::signal(s, SigHandler::Handler(relay));
                }
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(deny(format!("waiting for the command: {e}"))),
                }
            }
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(Stop(msg, code)) => {
            if code == 0 {
                println!("{msg}");
            } else {
                eprintln!("nuketown: {msg}");
            }
            ExitCode::from(code)
        }
    }
}
