//! `nuketown-elevate`: the root entry point. sudoers lets an agent run this
//! program and nothing else; it asks the town hall about the exact command and
//! runs it only on an approval.
//!
//! It trusts nothing the agent controls: the agent is who `SUDO_UID` (set by
//! sudo itself) says; the environment is otherwise ignored; the hall's socket
//! is a fixed path; the command runs with a clean environment. Any failure —
//! hall down, hall gone mid-request, a malformed answer — is a denial.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{execve, fork, ForkResult, Group, User};
use nuketown_hall::client::{ClientError, Requester};
use nuketown_hall::protocol::{show_argv, Ask, ToRequester};

use nuketown_hall::SAFE_PATH;

#[derive(Debug, Default)]
struct Opts {
    user: Option<String>,
    group: Option<String>,
    login: bool,
    shell: bool,
    command: Vec<String>,
}

const USAGE: &str = "usage: sudo [-u USER] [-g GROUP] [-i | -s] [--] COMMAND [ARG…]\n\
Each command is sent to the town hall; it runs as root only after a human approves exactly that command.";

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let value = |i: &mut usize, flag: &str| -> Result<String, String> {
            *i += 1;
            args.get(*i).cloned().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--" => {
                o.command = args[i + 1..].to_vec();
                break;
            }
            "-u" | "--user" => o.user = Some(value(&mut i, a)?),
            "-g" | "--group" => o.group = Some(value(&mut i, a)?),
            "-i" | "--login" => o.login = true,
            "-s" | "--shell" => o.shell = true,
            // No password is ever asked: these change nothing here.
            "-n" | "--non-interactive" | "-H" | "--set-home" | "-k" | "--reset-timestamp" | "-K" | "--remove-timestamp" => {}
            "-E" | "--preserve-env" => return Err("the environment is never passed to root through the town hall; drop -E".into()),
            "-h" | "--help" | "-V" | "--version" => return Err(USAGE.into()),
            s if s.starts_with("--user=") => o.user = Some(s["--user=".len()..].to_string()),
            s if s.starts_with("--group=") => o.group = Some(s["--group=".len()..].to_string()),
            s if s.starts_with("-u") && s.len() > 2 => o.user = Some(s[2..].to_string()),
            s if s.starts_with("-g") && s.len() > 2 => o.group = Some(s[2..].to_string()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("sudo option {s} is not supported through the town hall\n{USAGE}")),
            _ => {
                o.command = args[i..].to_vec();
                break;
            }
        }
        i += 1;
    }
    if o.login && o.shell {
        return Err(format!("-i and -s cannot go together\n{USAGE}"));
    }
    if o.command.is_empty() && !o.login && !o.shell {
        return Err(USAGE.into());
    }
    Ok(o)
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// An absolute path for `program`: as given when it has a `/`, else looked up in SAFE_PATH.
fn resolve(program: &str, cwd: &Path) -> Result<PathBuf, String> {
    nuketown_hall::resolve_program(program, cwd).ok_or_else(|| {
        if program.contains('/') {
            format!("{program}: no such file")
        } else {
            format!("{program}: command not found (looked in {SAFE_PATH})")
        }
    })
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| "arguments may not contain NUL".to_string())
}

fn run() -> Result<u8, String> {
    if !nix::unistd::getuid().is_root() {
        return Err("nuketown-elevate runs through sudo: type `sudo COMMAND`".into());
    }
    // The agent, as sudo (not the agent) says.
    let sudo_uid: u32 = std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse().ok())
        .ok_or("nuketown-elevate must be run through sudo (SUDO_UID is not set); denied")?;
    let term = std::env::var("TERM").ok().filter(|t| !t.is_empty() && t.len() < 64 && t.chars().all(|c| c.is_ascii_alphanumeric() || "-._+".contains(c)));

    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let o = parse(&args)?;
    let user_name = o.user.clone().unwrap_or_else(|| "root".into());
    let target = if let Some(uid) = user_name.strip_prefix('#') {
        User::from_uid(nix::unistd::Uid::from_raw(uid.parse().map_err(|_| format!("-u {user_name}: not a uid"))?))
    } else {
        User::from_name(&user_name)
    }
    .map_err(|e| e.to_string())?
    .ok_or_else(|| format!("-u {user_name}: no such user"))?;
    let gid = match &o.group {
        Some(g) => Group::from_name(g).map_err(|e| e.to_string())?.ok_or_else(|| format!("-g {g}: no such group"))?.gid,
        None => target.gid,
    };
    let shell = target.shell.to_string_lossy().into_owned();
    let cwd = if o.login { target.dir.clone() } else { std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")) };

    // The exact argv that will run.
    let mut argv: Vec<String> = if o.login || o.shell {
        let mut v = vec![shell.clone()];
        if o.login {
            v.push("-l".into());
        }
        if !o.command.is_empty() {
            v.push("-c".into());
            v.push(o.command.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "));
        }
        v
    } else {
        o.command.clone()
    };
    argv[0] = resolve(&argv[0], &cwd)?.to_string_lossy().into_owned();

    let mut hall = Requester::connect(Path::new(nuketown_hall::REQUESTER_SOCKET))
        .map_err(|_| "the town hall is not running; denied (start it: systemctl start nuketown-hall)".to_string())?;
    let ask = Ask { argv: argv.clone(), cwd: cwd.to_string_lossy().into_owned(), user: target.name.clone(), group: o.group.clone(), sudo_uid };
    hall.ask(ask).map_err(|e| format!("{e}; denied"))?;
    let id = loop {
        match hall.next() {
            Ok(ToRequester::Pending { id, timeout_secs }) => {
                eprintln!("nuketown: asking a human to approve {} as {} (request {}, {timeout_secs} s)…", show_argv(&argv), target.name, &id[..8]);
            }
            Ok(ToRequester::Decision { id, approved: true, by, reason, .. }) => {
                if by.channel != "policy" {
                    eprintln!("nuketown: {reason}");
                }
                break id;
            }
            Ok(ToRequester::Decision { reason, .. }) => return Err(reason_text(&reason)),
            Err(ClientError::Closed) | Err(ClientError::Io(_)) => return Err("the town hall went away before deciding; denied".into()),
            Err(e) => return Err(format!("{e}; denied")),
        }
    };

    // Run exactly that, as the target, with a clean environment.
    let mut env = vec![
        format!("PATH={SAFE_PATH}"),
        format!("HOME={}", target.dir.display()),
        format!("USER={}", target.name),
        format!("LOGNAME={}", target.name),
        format!("SHELL={shell}"),
        format!("SUDO_UID={sudo_uid}"),
    ];
    if let Some(t) = term {
        env.push(format!("TERM={t}"));
    }
    let c_argv: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let c_env: Vec<CString> = env.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let c_name = cstr(&target.name)?;
    let c_cwd = CString::new(cwd.as_os_str().as_bytes()).map_err(|_| "bad cwd")?;
    // Safety: single-threaded process; the child only makes syscalls before exec.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let fail = |what: &str, e: nix::Error| -> ! {
                eprintln!("nuketown: {what}: {e}");
                std::process::exit(126)
            };
            if let Err(e) = nix::unistd::initgroups(&c_name, gid) {
                fail("initgroups", e);
            }
            if let Err(e) = nix::unistd::setgid(gid) {
                fail("setgid", e);
            }
            if let Err(e) = nix::unistd::setuid(target.uid) {
                fail("setuid", e);
            }
            if nix::unistd::chdir(c_cwd.as_c_str()).is_err() {
                let _ = nix::unistd::chdir("/");
            }
            let e = execve(&c_argv[0], &c_argv, &c_env).unwrap_err();
            fail(&format!("cannot run {}", argv[0]), e)
        }
        ForkResult::Parent { child } => {
            // The terminal's ^C reaches the command (same process group); we wait.
            unsafe {
                let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn);
                let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGQUIT, nix::sys::signal::SigHandler::SigIgn);
            }
            let status = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) => continue,
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(format!("waiting for the command: {e}")),
                }
            };
            let _ = hall.exit(&id, status);
            Ok(status.clamp(0, 255) as u8)
        }
    }
}

fn reason_text(reason: &str) -> String {
    if reason.starts_with("timed out") {
        format!("{reason}, denied")
    } else if reason.starts_with("denied") {
        reason.to_string()
    } else {
        format!("denied: {reason}")
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("nuketown: {msg}");
            ExitCode::from(1)
        }
    }
}
