//! The entry point's pure parts: sudo's flags, the argv that will run, and
//! the words the agent reads (opening the program: tests/changeable.rs).

use nuketown_hall::entry::{command_argv, denial_text, parse_flags, FlagError, Flags};

fn flags(args: &[&str]) -> Result<Flags, FlagError> {
    parse_flags(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn cmd(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sudo_flags_keep_their_meaning() {
    assert_eq!(flags(&["whoami"]).unwrap().command, cmd(&["whoami"]));
    let f = flags(&["-u", "vox", "-g", "disk", "--", "-weird", "-u"]).unwrap();
    assert_eq!(
        (f.user.as_deref(), f.group.as_deref()),
        (Some("vox"), Some("disk"))
    );
    assert_eq!(f.command, cmd(&["-weird", "-u"]));
    let f = flags(&["-nu", "root", "id", "-u"]).unwrap();
    assert_eq!(
        (f.user.as_deref(), f.command.clone()),
        (Some("root"), cmd(&["id", "-u"]))
    );
    let f = flags(&["-uvox", "--group=adm", "-n", "ls"]).unwrap();
    assert_eq!(
        (f.user.as_deref(), f.group.as_deref()),
        (Some("vox"), Some("adm"))
    );
    let f = flags(&["-i"]).unwrap();
    assert!(f.login && f.command.is_empty());
    let f = flags(&["-s", "echo", "a b"]).unwrap();
    assert!(f.shell && f.command == cmd(&["echo", "a b"]));
    // Options after the command belong to the command.
    assert_eq!(
        flags(&["ls", "-u", "x"]).unwrap().command,
        cmd(&["ls", "-u", "x"])
    );
}

#[test]
fn flags_that_would_weaken_the_path_are_refused() {
    for bad in [
        &["-E", "id"][..],
        &["--preserve-env=PATH", "id"],
        &["-nE", "id"],
        &["FOO=bar", "id"],
        &["LD_PRELOAD=/x.so", "id"],
        &["-e", "/etc/shadow"],
        &["-l"],
        &["-v"],
        &["--chroot=/x", "id"],
        &["-i", "-s"],
        &["-u"],
        &["-u", ""],
        &[],
    ] {
        match flags(bad) {
            Err(FlagError::Bad(m)) => assert!(!m.is_empty()),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
    assert_eq!(flags(&["-h"]), Err(FlagError::Help));
    // A path with '=' is a command, not an assignment.
    assert_eq!(flags(&["./a=b"]).unwrap().command, cmd(&["./a=b"]));
}

#[test]
fn shells_get_the_command_quoted() {
    let f = flags(&["-i", "echo", "it's", "$HOME"]).unwrap();
    assert_eq!(
        command_argv(&f, "/bin/bash"),
        cmd(&["/bin/bash", "-l", "-c", r"echo 'it'\''s' '$HOME'"])
    );
    let f = flags(&["-s"]).unwrap();
    assert_eq!(command_argv(&f, ""), cmd(&["/bin/sh"]));
    let f = flags(&["id", "-u"]).unwrap();
    assert_eq!(command_argv(&f, "/bin/bash"), cmd(&["id", "-u"]));
}

#[test]
fn the_agent_reads_why() {
    assert_eq!(
        denial_text("denied by josh via terminal"),
        "denied by josh via terminal"
    );
    assert_eq!(
        denial_text("timed out after 120 s"),
        "timed out after 120 s, denied"
    );
    assert_eq!(
        denial_text("nktx is not an enabled agent of this town"),
        "denied: nktx is not an enabled agent of this town"
    );
    assert_eq!(
        denial_text("[MOCK] denied by josh's mock mode file"),
        "[MOCK] denied by josh's mock mode file"
    );
}
