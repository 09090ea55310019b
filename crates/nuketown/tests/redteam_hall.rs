//! Red team: the agent attacks the approval path with real sudo, the real
//! entry point and the real hall, one class of flaw a test, each attack
//! beside the legitimate use it must not break. docs/security.md maps each
//! guarantee to its test here. Needs root (CI runs as root).
//!
//! Proof of escalation is a file in a root-only directory (`victim`): only a
//! command running as root can write there. Requests that must reach a human
//! are seen at a watching approver and then denied, so no test waits for a
//! timeout.

mod hall_fixture;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use hall_fixture::*;

fn town(ada_sudo: &str) -> TestTown {
    let mut t = TestTown::new(Options {
        ada_sudo: ada_sudo.into(),
        ..Options::default()
    });
    t.start_hall();
    t
}

fn canonical(p: &Path) -> String {
    fs::canonicalize(p).unwrap().to_str().unwrap().to_string()
}

/// Class 1: the program judged is the program run. The agent's own
/// `usr/bin/true`, reached by paths that mean `/usr/bin/true` somewhere
/// else, never rides on the autoApprove rule for `/usr/bin/true`.
#[test]
fn the_program_judged_is_the_program_run() {
    let t = town("autoApprove = [{ argv = [\"/usr/bin/true\"] }, { argv = [\"true\"] }]\n");
    let v = victim(&t);
    agent_ok(
        &t,
        &format!(
            "mkdir -p usr/bin && printf '#!/bin/sh\\nid -u > {}/pwned\\n' > usr/bin/true && chmod 755 usr/bin/true && ln -s /usr/bin bin-link",
            v.display()
        ),
    );
    let mut w = t.watch();
    let script = canonical(&t.home(ADA).join("usr/bin/true"));
    // Relative to the agent's working directory, however spelled: it is the
    // agent's file, named canonically, and only a human may decide.
    for spelled in [
        "usr/bin/true",
        "./usr/bin/true",
        "$HOME/usr/bin/true",
        "usr/../usr/bin/true",
    ] {
        let child = t.spawn_agent(ADA, &format!("sudo {spelled}"));
        let r = human_must_decide(&t, &mut w, child);
        assert_eq!(r.argv, [script.as_str()], "{spelled}");
        assert_eq!(r.program.path, script, "{spelled}");
    }
    // Paths whose meaning depends on the process are refused outright.
    for magic in [
        "/proc/self/cwd/usr/bin/true",
        "/proc/self/root/usr/bin/true",
        "/proc/$$/cwd/usr/bin/true",
        "/dev/fd/0 < usr/bin/true",
        "/dev/stdin < usr/bin/true",
    ] {
        let o = t.agent(ADA, &format!("sudo {magic}"));
        assert!(!o.status.success(), "{magic}");
        assert!(stderr(&o).contains("magic link"), "{magic}: {}", stderr(&o));
    }
    // Each refusal is in the audit log, attributed, with what was typed.
    let refused: Vec<_> = t
        .audit()
        .into_iter()
        .filter(|r| r.decided_by.as_ref().is_some_and(|b| b.channel == "entry"))
        .collect();
    assert_eq!(refused.len(), 5, "{refused:#?}");
    assert!(refused
        .iter()
        .all(|r| r.agent == ADA && r.decision == "denied" && r.reason.contains("magic link")));
    assert!(refused
        .iter()
        .any(|r| r.argv == ["/proc/self/cwd/usr/bin/true"]));
    // The root's program through a link in the agent's home: the file is
    // root's, the way to it is the agent's — a human decides.
    let child = t.spawn_agent(ADA, "sudo bin-link/true");
    let r = human_must_decide(&t, &mut w, child);
    assert_eq!(r.program.path, canonical(Path::new("/usr/bin/true")));
    assert_eq!(r.typed.as_deref(), Some("bin-link/true"));
    assert!(
        !v.join("pwned").exists(),
        "the agent's script never ran as root"
    );

    // The legitimate use: the real program by its real path, or by name,
    // from a directory root owns.
    assert_eq!(
        agent_ok(&t, "cd / && sudo /usr/bin/true && echo ok"),
        "ok\n"
    );
    assert_eq!(agent_ok(&t, "cd / && sudo true && echo ok"), "ok\n");
    let approved: Vec<_> = t
        .audit()
        .into_iter()
        .filter(|r| r.decision == "approved")
        .collect();
    assert_eq!(approved.len(), 2);
    for r in &approved {
        assert_eq!(r.decided_by.as_ref().unwrap().channel, "policy");
        assert_eq!(
            r.program.as_ref().unwrap().path,
            canonical(Path::new("/usr/bin/true"))
        );
        assert_eq!(r.exit_status, Some(0));
    }
}

/// Class 1, the swap: what the human approved runs, even when the agent
/// replaces the file (or its name) while the request waits.
#[test]
fn what_was_approved_runs_even_if_the_agent_swaps_the_file() {
    let t = town("");
    agent_ok(
        &t,
        "printf '#!/bin/sh\\necho approved-content\\n' > tool && chmod 755 tool",
    );
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "sudo ./tool");
    let r = next_request(&mut w);
    assert!(r.agent_can_write);
    // The agent swaps the name for new content, then for a link to a root program.
    agent_ok(
        &t,
        "printf '#!/bin/sh\\necho swapped\\n' > tool.new && chmod 755 tool.new && mv tool.new tool",
    );
    decider(&t).decide(&r, true, None, "terminal").unwrap();
    let o = finish(child);
    assert_eq!(stdout(&o), "approved-content\n", "{}", stderr(&o));

    let child = t.spawn_agent(ADA, "sudo ./tool");
    let r = next_request(&mut w);
    agent_ok(&t, "rm tool && ln -s /usr/bin/id tool");
    decider(&t).decide(&r, true, None, "terminal").unwrap();
    let o = finish(child);
    assert_eq!(stdout(&o), "swapped\n", "{}", stderr(&o));
}

/// Class 2: the working directory shown is the one used. It is opened once
/// and entered by descriptor; swapping it for a link changes nothing, and a
/// directory that cannot be named is a denial, never a fallback to `/`.
#[test]
fn the_working_directory_shown_is_the_one_used() {
    let t = town("");
    let v = victim(&t);
    fs::write(v.join("precious"), "root's").unwrap();
    agent_ok(&t, "mkdir w");
    let w_dir = t.home(ADA).join("w");
    // A root-owned file in the agent's directory: the approved chown's legitimate target.
    fs::write(w_dir.join("f"), "").unwrap();
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, &format!("cd w && sudo chown -R {ADA} ."));
    let r = next_request(&mut w);
    assert_eq!(r.cwd, canonical(&w_dir));
    // While it waits, the agent moves the directory away and plants a link to root's.
    agent_ok(&t, &format!("mv w w2 && ln -s {} w", v.display()));
    decider(&t).decide(&r, true, None, "terminal").unwrap();
    let o = finish(child);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::metadata(v.join("precious")).unwrap().uid(),
        0,
        "root's file untouched"
    );
    assert_eq!(
        fs::metadata(t.home(ADA).join("w2/f")).unwrap().uid(),
        ADA_UID,
        "the directory the human saw got the chown"
    );

    // A working directory that no longer exists: denied, nothing runs in `/`.
    let o = t.agent(
        ADA,
        &format!(
            "mkdir gone && cd gone && rmdir ../gone && sudo /usr/bin/touch {}/fallback",
            v.display()
        ),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("working directory"), "{}", stderr(&o));
    assert!(!v.join("fallback").exists());

    // The legitimate use: the command runs in the directory it was asked from
    // (the agent's: a human decides).
    let child = t.spawn_agent(ADA, "cd w2 && sudo /usr/bin/pwd");
    let r = next_request(&mut w);
    decider(&t).decide(&r, true, None, "terminal").unwrap();
    assert_eq!(
        stdout(&finish(child)),
        format!("{}\n", canonical(&t.home(ADA).join("w2")))
    );
}

fn setfacl(args: &[&str], p: &Path) {
    let o = Command::new("setfacl").args(args).arg(p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Class 3: only what is proven root's — owner, group and ACL write, every
/// directory up the chain, and every file the arguments may name — is
/// decided by autoApprove, a grant or the mock file; anything else goes to a
/// human, warned.
#[test]
fn what_the_agent_can_change_only_a_human_decides() {
    let t = {
        // The rule names the script's absolute path, known once the town's directory exists.
        let mut t = TestTown::new(Options {
            ada_sudo: String::new(),
            ..Options::default()
        });
        let opt_dir = t.path("opt");
        let rules = format!(
            "autoApprove = [{{ argv = [\"/bin/sh\", \"{}/build.sh\"] }}, {{ argv = [\"/usr/bin/cat\"], extra = {{ words = [\"--number\"], pattern = \"[a-zA-Z0-9/._-]+\", max = 2 }} }}, {{ argv = [\"make\"], extra = {{ pattern = \"[a-zA-Z0-9/._=-]+\", max = 3 }} }}]\n",
            opt_dir.display()
        );
        let text = fs::read_to_string(&t.town)
            .unwrap()
            .replace("[agents.nktvox]", &format!("{rules}[agents.nktvox]"));
        fs::write(&t.town, text).unwrap();
        t.start_hall();
        t
    };
    let v = victim(&t);
    let opt_dir = t.path("opt");
    fs::create_dir_all(&opt_dir).unwrap();
    fs::set_permissions(&opt_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let script = opt_dir.join("build.sh");
    fs::write(&script, format!("#!/bin/sh\nid -u > {}/ran\n", v.display())).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let run = format!("cd / && sudo /bin/sh {}", script.display());

    // Legitimate: root's script in root's directory, by the rule.
    agent_ok(&t, &run);
    assert_eq!(fs::read_to_string(v.join("ran")).unwrap(), "0\n");
    fs::remove_file(v.join("ran")).unwrap();

    let mut w = t.watch();
    let chown = |p: &Path, uid: u32, gid: Option<u32>| {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(uid)),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .unwrap()
    };
    // The agent owns the script, with no write bit: an owner can chmod it back.
    chown(&script, ADA_UID, None);
    fs::set_permissions(&script, fs::Permissions::from_mode(0o555)).unwrap();
    let r = human_must_decide(&t, &mut w, t.spawn_agent(ADA, &run));
    assert!(
        r.warnings
            .iter()
            .any(|x| x.contains(&format!("owned by {ADA}"))),
        "{:?}",
        r.warnings
    );
    // Group write, the agent in the group.
    chown(&script, 0, Some(ADA_UID));
    fs::set_permissions(&script, fs::Permissions::from_mode(0o775)).unwrap();
    human_must_decide(&t, &mut w, t.spawn_agent(ADA, &run));
    chown(&script, 0, Some(0));
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    // An ACL entry for the agent.
    setfacl(&["-m", &format!("u:{ADA}:rw")], &script);
    human_must_decide(&t, &mut w, t.spawn_agent(ADA, &run));
    setfacl(&["-b"], &script);
    // A directory up the chain that the agent owns.
    chown(&opt_dir, ADA_UID, None);
    let r = human_must_decide(&t, &mut w, t.spawn_agent(ADA, &run));
    assert!(
        r.warnings
            .iter()
            .any(|x| x.contains("the directory") && x.contains(&format!("owned by {ADA}"))),
        "{:?}",
        r.warnings
    );
    chown(&opt_dir, 0, None);
    // Files named by arguments: a file for cat, a makefile for make (with -f, or glued: -fFILE).
    agent_ok(
        &t,
        &format!(
            "printf 'all:\\n\\tid -u > {}/make-ran\\n' > Makefile && echo notes > notes",
            v.display()
        ),
    );
    for cmd in [
        "sudo cat notes",
        "cd / && sudo /usr/bin/cat $HOME/notes",
        "cd / && sudo cat --number $HOME/notes",
    ] {
        let r = human_must_decide(&t, &mut w, t.spawn_agent(ADA, cmd));
        assert!(!r.agent_writable_args.is_empty(), "{cmd}");
    }
    if Path::new("/usr/bin/make").exists() {
        for cmd in [
            "sudo make -f Makefile",
            "cd / && sudo make -f $HOME/Makefile",
            "cd / && sudo make -f$HOME/Makefile",
            "cd / && sudo make --file=$HOME/Makefile",
            "cd / && sudo make -C $HOME",
        ] {
            let r = human_must_decide(&t, &mut w, t.spawn_agent(ADA, cmd));
            assert!(
                !r.agent_writable_args.is_empty() || cmd == "sudo make -f Makefile",
                "{cmd}: {r:#?}"
            );
        }
    }
    assert!(!v.join("ran").exists() && !v.join("make-ran").exists());

    // Legitimate: cat of root's file is still approved by the rule, from a root directory.
    assert_eq!(
        agent_ok(&t, "cd / && sudo cat /etc/hostname"),
        fs::read_to_string("/etc/hostname").unwrap()
    );

    // A grant never covers what the agent can change: approved once, asked again.
    let child = t.spawn_agent(ADA, "sudo /bin/sh ./notes");
    let r = next_request(&mut w);
    assert!(!r.grantable);
    decider(&t).decide(&r, true, Some(600), "terminal").unwrap();
    let o = finish(child);
    assert!(stderr(&o).contains("this once"), "{}", stderr(&o));
    human_must_decide(&t, &mut w, t.spawn_agent(ADA, "sudo /bin/sh ./notes"));

    // Nor does the mock file.
    t.set_mode_file("MOCK_APPROVED", HUMAN, 0o644);
    human_must_decide(&t, &mut w, t.spawn_agent(ADA, "sudo /bin/sh ./notes"));
    // While it still approves what is proven root's.
    let o = t.agent(ADA, "cd / && sudo /usr/bin/id -u");
    assert_eq!(stdout(&o), "0\n");
    assert!(stderr(&o).contains("[MOCK]"), "{}", stderr(&o));
}

/// A legitimate grant: the same exact command, same program, same working
/// directory, for a while — and nothing else.
#[test]
fn a_grant_covers_the_same_command_in_the_same_place_only() {
    let t = town("");
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "cd / && sudo id -u");
    let r = next_request(&mut w);
    assert!(r.grantable && !r.agent_can_write, "{r:#?}");
    decider(&t).decide(&r, true, Some(600), "terminal").unwrap();
    assert_eq!(stdout(&finish(child)), "0\n");
    assert_eq!(
        agent_ok(&t, "cd / && sudo id -u"),
        "0\n",
        "the grant answers"
    );
    // Elsewhere: the same argv in another working directory is asked again.
    let child = t.spawn_agent(ADA, "cd /usr && sudo id -u");
    let r2 = next_request(&mut w);
    assert_eq!(r2.cwd, "/usr");
    decider(&t).decide(&r2, false, None, "terminal").unwrap();
    assert!(!finish(child).status.success());
}

/// Class 7: an agent cannot flood its approvers.
#[test]
fn a_flood_of_requests_is_capped_per_agent() {
    let t = town("maxPending = 2\n");
    let mut w = t.watch();
    let a = t.spawn_agent(ADA, "sudo id -u");
    let b = t.spawn_agent(ADA, "sudo id -g");
    let ra = next_request(&mut w);
    let rb = next_request(&mut w);
    let o = t.agent(ADA, "sudo id -n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("maxPending"), "{}", stderr(&o));
    // vox is not held back.
    let c = t.spawn_agent(VOX, "sudo id -u");
    let rc = next_request(&mut w);
    assert_eq!(rc.agent, VOX);
    for r in [ra, rb, rc] {
        decider(&t).decide(&r, false, None, "terminal").unwrap();
    }
    for child in [a, b, c] {
        assert!(!finish(child).status.success());
    }
}

/// Class 3, across agents: vox plants what ada runs. A file another agent
/// can change is as much the agents' as the requester's own.
#[test]
fn one_agent_cannot_plant_what_another_runs_as_root() {
    let mut t = TestTown::new(Options {
        ada_sudo: String::new(),
        ..Options::default()
    });
    let shared = t.path("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    let tool = shared.join("tool");
    let text = fs::read_to_string(&t.town).unwrap().replace(
        "[agents.nktvox]",
        &format!(
            "autoApprove = [{{ argv = [\"{}\"] }}]\n[agents.nktvox]",
            tool.display()
        ),
    );
    fs::write(&t.town, text).unwrap();
    t.start_hall();
    let v = victim(&t);
    fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    // Legitimate: root's tool, by ada's rule.
    assert_eq!(
        agent_ok(&t, &format!("cd / && sudo {}", tool.display())),
        "tool\n"
    );
    // vox owns it now (and rewrites it): ada's rule no longer decides.
    nix::unistd::chown(&tool, Some(nix::unistd::Uid::from_raw(VOX_UID)), None).unwrap();
    let o = t.agent(
        VOX,
        &format!(
            "printf '#!/bin/sh\\nid -u > {}/planted\\n' > {}",
            v.display(),
            tool.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut w = t.watch();
    let r = human_must_decide(
        &t,
        &mut w,
        t.spawn_agent(ADA, &format!("cd / && sudo {}", tool.display())),
    );
    assert!(
        r.warnings
            .iter()
            .any(|x| x.contains(&format!("owned by {VOX}"))),
        "{:?}",
        r.warnings
    );
    assert!(!v.join("planted").exists());
}

/// An agent withdraws a request by ending its sudo — even with SIGKILL, which
/// sudo cannot pass on: the entry point goes with it, the request is
/// cancelled, and a late approval decides nothing.
#[test]
fn a_request_whose_sudo_is_killed_is_withdrawn() {
    let t = town("");
    let v = victim(&t);
    let mut w = t.watch();
    let agent = t.spawn_agent(
        ADA,
        // sudo's pid is written before sudo starts (the shell execs it), so before the request exists.
        &format!(
            "sh -c 'echo $$ > sudo.pid; exec sudo /usr/bin/touch {}/late'",
            v.display()
        ),
    );
    let r = next_request(&mut w);
    let pid: i32 = fs::read_to_string(t.home(ADA).join("sudo.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (id, outcome, _, _) = next_resolution(&mut w);
    assert_eq!(
        (id.as_str(), outcome.as_str()),
        (r.id.as_str(), "cancelled")
    );
    assert!(decider(&t).decide(&r, true, None, "terminal").is_err());
    finish(agent);
    assert!(!v.join("late").exists());
}

/// Class 3, through an interpreter: root's script, by ada's rule, whose `#!`
/// line names a program ada can change. The script is root's; what runs it is not.
#[test]
fn a_script_whose_interpreter_the_agent_can_change_goes_to_a_human() {
    let mut t = TestTown::new(Options {
        ada_sudo: String::new(),
        ..Options::default()
    });
    // In a directory of its own: a script's neighbours are read as its own.
    fs::create_dir(t.path("opt")).unwrap();
    fs::set_permissions(t.path("opt"), fs::Permissions::from_mode(0o755)).unwrap();
    let script = t.path("opt/tool.sh");
    let text = fs::read_to_string(&t.town).unwrap().replace(
        "[agents.nktvox]",
        &format!(
            "autoApprove = [{{ argv = [\"{}\"] }}]\n[agents.nktvox]",
            script.display()
        ),
    );
    fs::write(&t.town, text).unwrap();
    t.start_hall();
    let v = victim(&t);
    fs::write(&script, "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    // Legitimate: root's script with root's interpreter, by the rule.
    assert_eq!(
        agent_ok(&t, &format!("cd / && sudo {}", script.display())),
        "tool\n"
    );
    // The interpreter becomes ada's program.
    agent_ok(
        &t,
        &format!(
            "printf '#!/bin/sh\\nid -u > {}/interp\\n' > interp && chmod 755 interp",
            v.display()
        ),
    );
    fs::write(
        &script,
        format!("#!{}\necho tool\n", t.home(ADA).join("interp").display()),
    )
    .unwrap();
    let mut w = t.watch();
    let r = human_must_decide(
        &t,
        &mut w,
        t.spawn_agent(ADA, &format!("cd / && sudo {}", script.display())),
    );
    assert!(
        r.warnings.iter().any(|x| x.contains("its interpreter")),
        "{:?}",
        r.warnings
    );
    assert!(!v.join("interp").exists());
}
