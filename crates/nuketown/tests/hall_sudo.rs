//! The approval flow end to end: an agent's `sudo` (the shim, real sudo, the
//! real entry point) → the real hall → a real human approving or denying
//! with `nuketown approvals` → the command running as root, or not. Needs
//! root (CI runs as root).

mod hall_fixture;

use std::collections::BTreeSet;

use hall_fixture::*;

fn mock_town() -> TestTown {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    t.set_mode_file("MOCK_APPROVED", HUMAN, 0o644);
    t
}

#[test]
fn a_human_approves_and_the_command_runs_as_root() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    // From `/`: everything it runs and reads is root's; still, no rule covers it.
    let child = t.spawn_agent(ADA, "cd / && sudo whoami");
    let r = next_request(&mut w);
    assert_eq!((r.agent.as_str(), r.uid), (ADA, ADA_UID));
    assert_eq!(r.argv, ["/usr/bin/whoami"]);
    assert_eq!(r.user, "root");
    assert_eq!(r.cwd, "/");
    assert!(!r.agent_can_write && r.grantable, "{r:#?}");

    let listed = t.human(HUMAN, "approvals list");
    let text = stdout(&listed);
    assert!(listed.status.success(), "{text}{}", stderr(&listed));
    assert!(
        text.contains(&format!(
            "request {} from \"{ADA}\" (uid {ADA_UID})",
            &r.id[..8]
        )),
        "{text}"
    );
    assert!(text.contains("run      \"/usr/bin/whoami\""), "{text}");
    assert!(text.contains("as       \"root\""), "{text}");
    assert!(text.contains("in       \"/\""), "{text}");
    assert!(
        text.contains(&format!(
            "program  \"/usr/bin/whoami\" (proven root's: {ADA} cannot change it or what it reads)"
        )),
        "{text}"
    );
    assert!(text.contains(&r.id), "{text}");

    let approved = t.human(HUMAN, &format!("approvals approve {}", &r.id[..8]));
    assert!(approved.status.success(), "{}", stderr(&approved));
    let o = finish(child);
    assert_eq!(stdout(&o), "root\n", "{}", stderr(&o));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains(&format!("nuketown: approved by {HUMAN} via terminal")),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        next_resolution(&mut w),
        (
            r.id.clone(),
            "approved".into(),
            HUMAN.into(),
            "terminal".into()
        )
    );

    // Stopping the hall waits for it to record the exit status.
    drop(w);
    assert!(t.stop_hall().success());
    let rec = t.audit_of(&r.id);
    assert_eq!(
        (rec.agent.as_str(), rec.uid, rec.target.as_str()),
        (ADA, ADA_UID, "root")
    );
    assert_eq!(rec.argv, ["/usr/bin/whoami"]);
    assert_eq!(rec.cwd, "/");
    assert_eq!(rec.decision, "approved");
    let by = rec.decided_by.clone().unwrap();
    assert_eq!((by.who.as_str(), by.channel.as_str()), (HUMAN, "terminal"));
    assert_eq!(rec.exit_status, Some(0));
    assert!(rec.latency_ms.is_some() && !rec.mock);

    // The human reads the audit log (group nuketown-approvers may).
    let shown = t.human(HUMAN, "audit");
    let text = stdout(&shown);
    assert!(text.contains(&format!("{ADA} (uid {ADA_UID}) as root: \"/usr/bin/whoami\" -> approved by {HUMAN} via terminal")), "{text}{}", stderr(&shown));
    assert!(text.contains(", exit 0"), "{text}");
    let json = stdout(&t.human(HUMAN, "audit --json"));
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["decided_by"]["who"], HUMAN);
    assert_eq!(v["exit_status"], 0);
}

#[test]
fn a_human_denies_and_nothing_runs() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    let marker = t.path("denied-marker");
    let child = t.spawn_agent(ADA, &format!("sudo touch {}", marker.display()));
    let r = next_request(&mut w);
    let denied = t.human(HUMAN, &format!("approvals deny {}", r.id));
    assert!(denied.status.success(), "{}", stderr(&denied));
    let o = finish(child);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("nuketown: denied by {HUMAN} via terminal")),
        "{}",
        stderr(&o)
    );
    assert!(!marker.exists(), "a denied command never runs");
}

#[test]
fn policy_approves_quietly_and_deny_rules_win() {
    let mut t = TestTown::new(Options {
        ada_sudo: "autoApprove = [{ argv = [\"true\"] }, { argv = [\"rm\", \"-f\"], extra = { pattern = \"/[a-z0-9/._-]+\" } }]\ndeny = [{ argv = [\"rm\"], prefix = true }]\n".into(),
        ..Options::default()
    });
    t.start_hall();
    // A rule decides from a directory root owns.
    let o = t.agent(ADA, "cd / && sudo true");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "policy approvals are quiet");
    let marker = t.path("rm-marker");
    std::fs::write(&marker, "").unwrap();
    let o = t.agent(ADA, &format!("sudo rm -f {}", marker.display()));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "nuketown: denied by policy: matches agents.{ADA}.sudo.deny[0]"
        )),
        "{}",
        stderr(&o)
    );
    assert!(marker.exists());
    // The same program under another path is the same program.
    let o = t.agent(ADA, &format!("sudo /bin/rm -f {}", marker.display()));
    assert!(stderr(&o).contains("denied by policy"), "{}", stderr(&o));
    // A `true` of the agent's own is not the `true` the rule means: it asks a human, with a warning.
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "cp /bin/true ./true && sudo ./true");
    let r = next_request(&mut w);
    assert_eq!(r.argv, [t.home(ADA).join("true").to_str().unwrap()]);
    assert!(r.agent_can_write);
    let listed = stdout(&t.human(HUMAN, "approvals list"));
    assert!(
        listed.contains("WARNING  the program is not proven root's"),
        "{listed}"
    );
    assert!(t
        .human(HUMAN, &format!("approvals deny {}", r.id))
        .status
        .success());
    assert_eq!(finish(child).status.code(), Some(1));
}

#[test]
fn exit_status_and_output_pass_through() {
    let t = mock_town();
    let o = t.agent(ADA, "cd / && sudo sh -c 'echo out; echo err >&2; exit 7'");
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err\n"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "nuketown: [MOCK] approved by {HUMAN}'s mock mode file"
        )),
        "{}",
        stderr(&o)
    );
    let o = t.agent(ADA, "cd / && sudo sh -c 'kill -TERM $$'");
    assert_eq!(o.status.code(), Some(128 + 15));
    // stdin reaches the command.
    let o = t.agent(ADA, "cd / && echo piped | sudo cat");
    assert_eq!(stdout(&o), "piped\n");
}

#[test]
fn the_agents_environment_and_path_are_ignored() {
    let t = mock_town();
    let o = t.agent(
        ADA,
        "mkdir -p fake && printf '#!/bin/sh\\necho fake\\n' > fake/whoami && chmod +x fake/whoami && \
         cd / && SUDO_UID=1951 SUDO_USER=nktvox PATH=$HOME/fake:$PATH LD_PRELOAD=/nonexistent.so NUKETOWN_HALL_SOCKET=/nonexistent \
         HOME=/root sudo whoami",
    );
    assert_eq!(stdout(&o), "root\n", "{}", stderr(&o));
    let last = t.audit().pop().unwrap();
    assert_eq!(
        (last.agent.as_str(), last.uid),
        (ADA, ADA_UID),
        "the agent is who sudo says, not SUDO_UID in its environment"
    );
    assert_eq!(
        last.argv,
        ["/usr/bin/whoami"],
        "looked up on the fixed PATH, not the agent's"
    );
    // The command gets a clean environment: nothing the agent set.
    let o = t.agent(
        ADA,
        "cd / && FOO=agent-chosen BASH_ENV=/tmp/x TERM='xterm$(id)' sudo env",
    );
    let env = stdout(&o);
    let names: BTreeSet<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(
        names
            .iter()
            .all(|n| ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM"].contains(n)),
        "{env}"
    );
    assert!(
        env.contains(&format!("PATH={}\n", nuketown_hall::entry::SAFE_PATH)),
        "{env}"
    );
    assert!(
        env.contains("USER=root\n") && env.contains("HOME=/root\n"),
        "{env}"
    );
    assert!(
        !env.contains("agent-chosen") && !env.contains("$(id)"),
        "{env}"
    );
    // Setting variables for root, or keeping the environment, is refused outright.
    for attempt in [
        "sudo FOO=bar env",
        "sudo -E env",
        "sudo --preserve-env=PATH env",
    ] {
        let o = t.agent(ADA, attempt);
        assert_eq!(o.status.code(), Some(1), "{attempt}");
        assert_eq!(stdout(&o), "", "{attempt}");
        assert!(
            stderr(&o).contains("nuketown: "),
            "{attempt}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn sudo_reaches_only_the_entry_point() {
    let t = TestTown::new(Options::default());
    let elevate = t.elevate.display().to_string();
    // What sudo itself says the agent may do: the entry point, nothing else.
    let o = t.agent(ADA, "/usr/bin/sudo -n -l");
    let listed = stdout(&o);
    let commands: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('('))
        .collect();
    assert_eq!(commands.len(), 1, "{listed}{}", stderr(&o));
    let rule = commands[0];
    assert!(
        rule.starts_with("(root) ") && rule.ends_with(&format!(": {elevate}")),
        "{rule}"
    );
    assert!(
        rule.contains("NOPASSWD:") && rule.contains("NOSETENV:") && !rule.contains(" SETENV:"),
        "{rule}"
    );
    assert!(!listed.contains("(ALL"), "{listed}");
    // Real sudo, around the shim: anything but the entry point, or with options that weaken it, fails.
    for attempt in [
        "/usr/bin/sudo -n /bin/sh -c id".to_string(),
        "/usr/bin/sudo -n /usr/bin/id".into(),
        "/usr/bin/sudo -n -s id".into(),
        "/usr/bin/sudo -n -i id".into(),
        format!("/usr/bin/sudo -n -u {VOX} {elevate} id"),
        format!("/usr/bin/sudo -n -g {ADA} {elevate} id"),
        format!("/usr/bin/sudo -n -E {elevate} id"),
        format!("/usr/bin/sudo -n FOO=1 {elevate} id"),
        "/usr/bin/sudoedit -n /etc/shadow".into(),
    ] {
        let o = t.agent(ADA, &attempt);
        assert!(!o.status.success(), "{attempt} must fail:\n{}", stdout(&o));
        assert!(!stdout(&o).contains("uid=0"), "{attempt}");
    }
    // The entry point run without sudo does nothing; a human outside the town has no rule at all.
    let o = t.agent(ADA, &format!("{elevate} id"));
    assert!(stderr(&o).contains("runs through sudo"), "{}", stderr(&o));
    let o = t.agent(OUTSIDER, &format!("/usr/bin/sudo -n {elevate} id"));
    assert!(!o.status.success() && !stdout(&o).contains("uid=0"));
    // With no hall, the agent's sudo is denied (nothing ran).
    let o = t.agent(ADA, "sudo id -u");
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(1), ""));
}

#[test]
fn sudo_flags_keep_their_meaning() {
    let t = mock_town();
    let o = t.agent(ADA, &format!("cd / && sudo -u {VOX} id -un"));
    assert_eq!(stdout(&o), format!("{VOX}\n"), "{}", stderr(&o));
    let o = t.agent(ADA, &format!("cd / && sudo -n -u#{VOX_UID} -- id -u"));
    assert_eq!(stdout(&o), format!("{VOX_UID}\n"), "{}", stderr(&o));
    let o = t.agent(
        ADA,
        &format!("cd / && sudo -g {} id -gn", nuketown_hall::APPROVERS_GROUP),
    );
    assert_eq!(
        stdout(&o),
        format!("{}\n", nuketown_hall::APPROVERS_GROUP),
        "{}",
        stderr(&o)
    );
    // A login shell runs in the target's home, whose whole tree is not
    // proven here (root's dotfiles and caches): a human decides.
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "sudo -i pwd");
    let r = next_request(&mut w);
    assert_eq!(r.cwd, "/root");
    decider(&t).decide(&r, true, None, "terminal").unwrap();
    let o = finish(child);
    assert_eq!(stdout(&o), "/root\n", "{}", stderr(&o));
    let o = t.agent(ADA, "cd / && sudo -s -- echo 'a  b' \"it's\"");
    assert_eq!(stdout(&o), "a  b it's\n", "{}", stderr(&o));
    let records = t.audit();
    let last = records.last().unwrap();
    assert_eq!(
        last.argv[1..],
        ["-c".to_string(), r"echo 'a  b' 'it'\''s'".to_string()],
        "the approver saw the shell and its exact command line"
    );
    let o = t.agent(ADA, "sudo -u nosuchuser id");
    assert!(stderr(&o).contains("no such user"), "{}", stderr(&o));
    let o = t.agent(ADA, "sudo -h");
    assert!(
        o.status.success() && stdout(&o).contains("usage: sudo"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_approver_sees_exactly_what_runs() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    // One argument that tries to read as a second request, with a terminal escape and markup.
    let tricky = "x\nrequest 00000000 from \"nktvox\" (uid 1951)\n  run      \"/usr/bin/true\"\x1b[2K<b>ok</b> \u{202e}";
    let arg_file = t.home(ADA).join("arg");
    std::fs::write(&arg_file, tricky).unwrap();
    nix::unistd::chown(&arg_file, Some(nix::unistd::Uid::from_raw(ADA_UID)), None).unwrap();
    let child = t.spawn_agent(ADA, "sudo printf %s \"$(cat arg)\" ./arg");
    let r = next_request(&mut w);
    assert_eq!(
        r.argv,
        ["/usr/bin/printf", "%s", tricky, "./arg"],
        "the argv arrives as a list, exactly"
    );
    // In ada's home nothing is proven; ./arg, ada's file there, is named.
    assert_eq!(r.agent_writable_args, ["./arg"]);
    assert!(r.agent_can_write && !r.grantable);
    let o = t.human(HUMAN, "approvals list");
    let text = stdout(&o);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("request ")).count(),
        1,
        "one request reads as one:\n{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("run "))
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains(r#"run      "/usr/bin/printf" "%s" "x\nrequest 00000000 from \"nktvox\" (uid 1951)\n  run      \"/usr/bin/true\"\u{1b}[2K<b>ok</b> \u{202e}" "./arg""#), "{text}");
    assert!(
        !text.contains('\x1b') && !text.contains('\u{202e}'),
        "no raw control character reaches the terminal"
    );
    assert!(
        text.contains("WARNING  the argument \"./arg\" may name a file that is not proven root's"),
        "{text}"
    );
    assert!(t
        .human(HUMAN, &format!("approvals approve {}", r.id))
        .status
        .success());
    let o = finish(child);
    assert_eq!(
        stdout(&o),
        format!("{tricky}./arg"),
        "what ran is what was shown"
    );
}

#[test]
fn the_terminal_watcher_approves_denies_and_grants_for_a_while() {
    let t = {
        let mut t = TestTown::new(Options::default());
        t.start_hall();
        t
    };
    let mut watch = t
        .nuketown_as(HUMAN, "approvals watch")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Stream::new(watch.stdout.take().unwrap());
    let mut keys = watch.stdin.take().unwrap();
    out.until("watching for requests");
    let first = t.spawn_agent(ADA, "cd / && sudo id -u");
    let shown =
        out.until("approve? [y]es, [n]o, or a duration like 10m (approve it for that long): ");
    assert!(
        shown.contains(&format!("from \"{ADA}\" (uid {ADA_UID})")),
        "{shown}"
    );
    assert!(shown.contains("run      \"/usr/bin/id\" \"-u\""), "{shown}");
    assert!(shown.contains("as       \"root\""), "{shown}");
    assert!(shown.contains("in       \"/\""), "{shown}");
    assert!(
        shown.contains(&format!(
            "program  \"/usr/bin/id\" (proven root's: {ADA} cannot change it or what it reads)"
        )),
        "{shown}"
    );
    type_line(&mut keys, "maybe");
    out.until("answer y, n, or a duration");
    type_line(&mut keys, "10m");
    let o = finish(first);
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "approved by {HUMAN} via terminal, and for the next 600 s"
        )),
        "{}",
        stderr(&o)
    );
    // The same exact command again, in the same place: the grant answers, nobody is asked.
    let o = t.agent(ADA, "cd / && sudo id -u");
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    // vox asking the same is vox's own request; and another command of ada's still asks.
    let other = t.spawn_agent(ADA, "cd / && sudo id -g");
    out.until("approve? ");
    type_line(&mut keys, "n");
    let o = finish(other);
    assert!(
        stderr(&o).contains(&format!("nuketown: denied by {HUMAN} via terminal")),
        "{}",
        stderr(&o)
    );
    let vox = t.spawn_agent(VOX, "sudo id -u");
    let shown = out.until("approve? ");
    assert!(shown.contains(&format!("from \"{VOX}\"")), "{shown}");
    type_line(&mut keys, "y");
    assert_eq!(stdout(&finish(vox)), "0\n");
    let channels: Vec<String> = t
        .audit()
        .iter()
        .map(|r| r.decided_by.as_ref().unwrap().channel.clone())
        .collect();
    assert_eq!(channels, ["terminal", "grant", "terminal", "terminal"]);
    drop(keys);
    let status = finish(watch).status;
    assert!(status.success(), "watch ends quietly when its input ends");
}
