//! `nuketown-elevate`: the root entry point. sudoers lets an agent run this
//! program and nothing else; it asks the town hall about the exact command and
//! runs it only on an approval.
//!
//! It trusts nothing the agent controls: the agent is who `SUDO_UID` (set by
//! sudo itself) says; the rest of the environment is ignored; the hall's
//! socket is a fixed path; programs are found on a fixed PATH. What is
//! decided is what runs: the program and the working directory are opened
//! once, the hall decides on those files (canonical path, device, inode),
//! and the child enters and executes those very descriptors, with a clean
//! environment. Any failure — hall down, hall gone
//! mid-request, a malformed or late answer — is a denial.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::fcntl::{fcntl, AtFlags, FcntlArg, FdFlag};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{execveat, fork, ForkResult, Gid, Group, Uid, User};
use nuketown_hall::client::{ClientError, Requester};
use nuketown_hall::entry::{self, FlagError, SAFE_PATH};
use nuketown_hall::files;
use nuketown_hall::protocol::{show_argv, Ask, ToRequester};

/// How long the hall may take to say "pending" (or decide by policy).
const FIRST_ANSWER: Duration = Duration::from_secs(15);
/// How long reporting a refusal to the hall may take.
const REPORT_WITHIN: Duration = Duration::from_secs(2);
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
    // The agent withdraws a request by ending its sudo, however it ends (even
    // SIGKILL): this process then gets SIGTERM — while waiting, it dies and the
    // hall records the request cancelled; once the command runs, the signal is
    // passed on to it.
    let parent = nix::unistd::getppid();
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid() != parent {
        return Err(deny(
            "sudo ended before the request was asked; nothing was asked",
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
    // The working directory and the program, opened once: the hall decides
    // on these files, and the command enters and executes these very
    // descriptors. No fallback: what cannot be opened and named is refused
    // (and the refusal reported to the hall, for the audit log).
    let mut argv = entry::command_argv(&flags, &shell);
    let opened = if flags.login {
        target
            .dir
            .to_str()
            .ok_or_else(|| "the target's home is not UTF-8".to_string())
            .and_then(files::open_dir)
    } else {
        files::open_cwd()
    }
    .and_then(|cwd| {
        // On failure argv is left as typed, for the report.
        files::name_program(&mut argv, cwd.fd.as_fd(), SAFE_PATH)
            .map(|(program, typed)| (cwd, program, typed))
    });
    let (cwd, program, typed) = match opened {
        Ok(o) => o,
        Err(e) => {
            if let Ok(mut hall) = Requester::connect(Path::new(nuketown_hall::REQUESTER_SOCKET)) {
                let _ = hall.set_timeout(Some(REPORT_WITHIN));
                let _ = hall.refused(sudo_uid, &argv, &e);
            }
            return Err(deny(format!("{e}; denied")));
        }
    };

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
        program: program.file.clone(),
        typed,
        cwd: cwd.file.clone(),
        user: target.name.clone(),
        group: group_name,
        sudo_uid,
    })
    .map_err(|e| deny(format!("{e}; denied")))?;
    // The target's groups, looked up while the hall decides (and before any
    // fork: the child only makes syscalls). For root with its own group, sudo
    // already gave this process root's groups (initgroups): take them as they
    // are rather than asking every NSS source again.
    let groups = if target.uid.is_root() && gid == target.gid {
        nix::unistd::getgroups()
    } else {
        nix::unistd::getgrouplist(&cstr(target.name.as_bytes())?, gid)
    };

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
    let status = run_as(
        &argv,
        &program.fd,
        &target,
        gid,
        &groups,
        &cwd.fd,
        &shell,
        term,
    )?;
    let _ = hall.exit(&id, status);
    Ok(status.clamp(0, 255) as u8)
}

/// Fork, enter the opened working directory, become the target, execute
/// the opened program with exactly `argv` and a clean environment; wait and
/// return its status (exit code, or 128 + signal).
#[allow(clippy::too_many_arguments)]
fn run_as(
    argv: &[String],
    program: &OwnedFd,
    target: &User,
    gid: Gid,
    groups: &[Gid],
    cwd: &OwnedFd,
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
    // Safety: this process has one thread; the child makes only syscalls before exec.
    match unsafe { fork() }.map_err(|e| deny(format!("fork: {e}; denied")))? {
        ForkResult::Child => {
            let fail = |what: &str, e: nix::Error| -> ! {
                eprintln!("nuketown: {what}: {e}");
                std::process::exit(126)
            };
            // Entered by descriptor, as root, before anything else: the
            // directory the hall was told about, or nothing runs.
            if let Err(e) = nix::unistd::fchdir(cwd.as_raw_fd()) {
                fail("cannot enter the working directory", e);
            }
            if let Err(e) = nix::unistd::setgroups(groups) {
                fail("setgroups", e);
            }
            if let Err(e) = nix::unistd::setgid(gid) {
                fail("setgid", e);
            }
            if let Err(e) = nix::unistd::setuid(target.uid) {
                fail("setuid", e);
            }
            let exec = || {
                execveat(
                    Some(program.as_raw_fd()),
                    c"",
                    &c_argv,
                    &c_env,
                    AtFlags::AT_EMPTY_PATH,
                )
                .unwrap_err()
            };
            let mut e = exec();
            if e == nix::Error::ENOENT {
                // A script: its interpreter reads it as /dev/fd/N, which a
                // close-on-exec descriptor would not survive. Same file.
                let _ = fcntl(program.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()));
                e = exec();
            }
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
