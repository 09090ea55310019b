//! The third red team: a rule, a grant or the mock file decides only what
//! the hall proves root's. Each test is one class of attack the earlier
//! "could the agent change it?" search missed — as the agent, with real
//! sudo, the real entry point and the real hall — beside the legitimate use
//! that must still work. docs/security.md lists each. Needs root (CI runs
//! as root).
//!
//! Proof of escalation is a file in a root-only directory (`victim`): only a
//! command running as root can write there. Requests that must reach a human
//! are seen at a watching approver and denied, so no test waits for a timeout.

mod hall_fixture;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hall_fixture::*;

/// A town whose ada has exactly `rules` (TOML) under `[agents.nktada.sudo]`,
/// written once `dirs` (root's, 0755, under the town's directory) exist.
fn town_with(dirs: &[&str], rules: impl Fn(&TestTown) -> String) -> TestTown {
    let mut t = TestTown::new(Options {
        ada_sudo: String::new(),
        ..Options::default()
    });
    for d in dirs {
        let p = t.path(d);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let text = fs::read_to_string(&t.town).unwrap().replace(
        "[agents.nktvox]",
        &format!("{}\n[agents.nktvox]", rules(&t)),
    );
    fs::write(&t.town, text).unwrap();
    t.start_hall();
    t
}

/// A town whose ada may run root's `opt/tool` by an autoApprove rule: the
/// town, the tool's path, the victim directory.
fn tool_town() -> (TestTown, PathBuf, PathBuf) {
    let t = town_with(&["opt"], |t| {
        format!(
            "autoApprove = [{{ argv = [\"{}\"] }}]",
            t.path("opt/tool").display()
        )
    });
    let v = victim(&t);
    let tool = t.path("opt/tool");
    (t, tool, v)
}

fn chown(p: &Path, uid: u32) {
    nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
}

fn root_script(p: &Path, body: &str) {
    fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn has(r: &nuketown_hall::protocol::RequestView, text: &str) -> bool {
    r.warnings.iter().any(|w| w.contains(text))
}

/// Class 1: arguments are proven from every directory the program may start
/// from — `-C DIR`, a bundle of short flags, `~user` — not only from where
/// the request was made; a relative path that climbs never proves anything.
#[test]
fn arguments_are_proven_from_every_base_the_program_may_use() {
    if !Path::new("/usr/bin/make").exists() {
        eprintln!("SKIPPING: make is not installed here (apt install make)");
        return;
    }
    let t = town_with(&["app"], |t| {
        let app = t.path("app");
        format!(
            "autoApprove = [\n\
             {{ argv = [\"make\", \"-C\", \"{a}\"], extra = {{ pattern = \"[a-zA-Z0-9/._=~-]+\", max = 3 }} }},\n\
             {{ argv = [\"/usr/bin/git\"], extra = {{ pattern = \"[a-zA-Z0-9/._=~-]+\", max = 4 }} }},\n\
             {{ argv = [\"/usr/bin/env\"], extra = {{ pattern = \"[a-zA-Z0-9/._=~-]+\", max = 4 }} }},\n\
             ]",
            a = app.display()
        )
    });
    let v = victim(&t);
    let app = t.path("app");
    fs::write(
        app.join("Makefile"),
        format!("install:\n\techo installed > {}/installed\n", v.display()),
    )
    .unwrap();
    // ada's makefile, and a repository whose hook would run as root.
    agent_ok(
        &t,
        &format!(
            "printf 'install:\\n\\tid -u > {v}/pwned\\n' > evil.mk && \
             git init -q repo && git -C repo config core.fsmonitor 'id -u > {v}/pwned-git; false'",
            v = v.display()
        ),
    );
    let home = t.home(ADA);
    // From the app directory, up and into ada's home.
    let climb = format!("../home/{ADA}/evil.mk");
    let mut w = t.watch();
    for attack in [
        format!("sudo make -C {} -f {climb} install", app.display()),
        format!(
            "sudo make -C {} -sf{}/evil.mk install",
            app.display(),
            home.display()
        ),
        format!("sudo make -C {} -f '~{ADA}/evil.mk' install", app.display()),
        format!("sudo git -C {}/repo status", home.display()),
        format!("sudo env -C {} ./evil.mk", home.display()),
    ] {
        let r = human_must_decide(&t, &mut w, t.spawn_agent(ADA, &format!("cd / && {attack}")));
        assert!(!r.agent_writable_args.is_empty(), "{attack}: {r:#?}");
    }
    // From ada's own directory nothing is proven: make reads its Makefile there.
    agent_ok(&t, "cp evil.mk Makefile");
    human_must_decide(
        &t,
        &mut w,
        t.spawn_agent(ADA, &format!("sudo make -C {} install", app.display())),
    );
    assert!(!v.join("pwned").exists() && !v.join("pwned-git").exists());

    // Legitimate: root's makefile in root's directory, by the rule, from a root directory.
    agent_ok(
        &t,
        &format!("cd / && sudo make -C {} install", app.display()),
    );
    assert_eq!(
        fs::read_to_string(v.join("installed")).unwrap(),
        "installed\n"
    );
    let approved = t
        .audit()
        .into_iter()
        .filter(|r| r.decision == "approved")
        .count();
    assert_eq!(approved, 1);

    // A directory the program is given is read whole: the makefile includes
    // a file from a subdirectory ada owns (her build directory), which runs
    // as root when make reads it. The whole tree is proven, so a human decides.
    let build = app.join("build");
    fs::create_dir(&build).unwrap();
    chown(&build, ADA_UID);
    fs::write(
        app.join("Makefile"),
        format!(
            "-include build/config.mk\ninstall:\n\techo installed > {}/installed\n",
            v.display()
        ),
    )
    .unwrap();
    agent_ok(
        &t,
        &format!(
            "echo '$(shell id -u > {}/pwned)' > {}/config.mk",
            v.display(),
            build.display()
        ),
    );
    for attack in [
        format!("cd / && sudo make -C {} install", app.display()),
        format!(
            "cd {} && sudo make -C {} install",
            app.display(),
            app.display()
        ),
    ] {
        let r = human_must_decide(&t, &mut w, t.spawn_agent(ADA, &attack));
        assert!(has(&r, "owned by"), "{attack}: {:?}", r.warnings);
    }
    assert!(!v.join("pwned").exists());
}

/// Class 2: ids that are nobody's. An agent with subordinate ids owns files
/// as them (`newuidmap`); the town gives agents none, and the hall trusts
/// no id but root's and the host's own system accounts — whoever the
/// account files say an id belongs to, or that they name no one.
#[test]
fn files_of_ids_that_are_nobodys_are_not_root_s() {
    let (t, tool, v) = tool_town();
    root_script(&tool, &format!("id -u > {}/ran", v.display()));
    // What `newuidmap` would let ada do with a range of subordinate ids
    // (the fixture's useradd may have given ada one): own the file as one.
    let first_sub = fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && (f[0] == ADA || f[0] == ADA_UID.to_string()))
                .then(|| f[1].parse::<u32>().ok())
                .flatten()
        });
    let mut w = t.watch();
    for uid in [first_sub.unwrap_or(231_072), 65_534, 4242] {
        chown(&tool, uid);
        let r = human_must_decide(
            &t,
            &mut w,
            t.spawn_agent(ADA, &format!("cd / && sudo {}", tool.display())),
        );
        assert!(has(&r, &format!("uid {uid}")), "{uid}: {:?}", r.warnings);
    }
    if let Some(sub) = first_sub {
        chown(&tool, sub);
        let r = human_must_decide(
            &t,
            &mut w,
            t.spawn_agent(ADA, &format!("cd / && sudo {}", tool.display())),
        );
        assert!(
            has(&r, &format!("{ADA}'s subordinate ids")),
            "{:?}",
            r.warnings
        );
    }
    assert!(!v.join("ran").exists());
    // Legitimate: root's again, the rule decides.
    chown(&tool, 0);
    agent_ok(&t, &format!("cd / && sudo {}", tool.display()));
    assert_eq!(fs::read_to_string(v.join("ran")).unwrap(), "0\n");
}

/// Class 3: an agent the town no longer enables (or runs in the cloud only)
/// keeps its user and files until `apply --prune`; what it owns is still no
/// one's to trust.
#[test]
fn a_disabled_agents_files_are_not_root_s() {
    let (t, tool, v) = tool_town();
    root_script(&tool, "echo tool");
    let mut w = t.watch();
    let original = fs::read_to_string(&t.town).unwrap();
    for (how, vox) in [
        ("disabled", "[agents.nktvox]\nenable = false\n"),
        (
            "cloud-only",
            "[agents.nktvox]\nhost.enable = false\ncloud = { enable = true, image = \"busybox\" }\n",
        ),
    ] {
        let text = original.replace("[agents.nktvox]\n", vox);
        fs::write(&t.town, text).unwrap();
        chown(&tool, VOX_UID);
        // vox rewrites the tool: it still can, whatever the town says of it.
        let o = t.agent(VOX, &format!("printf '#!/bin/sh\\nid -u > {}/planted\\n' > {}", v.display(), tool.display()));
        assert!(o.status.success(), "{how}: {}", stderr(&o));
        let r = human_must_decide(&t, &mut w, t.spawn_agent(ADA, &format!("cd / && sudo {}", tool.display())));
        assert!(has(&r, VOX), "{how}: {:?}", r.warnings);
        chown(&tool, 0);
        root_script(&tool, "echo tool");
    }
    assert!(!v.join("planted").exists());
    // Legitimate: root's tool, by the rule.
    assert_eq!(
        agent_ok(&t, &format!("cd / && sudo {}", tool.display())),
        "tool\n"
    );
}

/// Class 4: a file the agent once could write and still holds open for
/// writing is not root's, whatever its owner and mode say now.
#[test]
fn a_file_the_agent_holds_open_for_writing_is_not_root_s() {
    let (t, tool, v) = tool_town();
    root_script(&tool, "echo tool");
    // Once ada's (say, while she wrote it): she opens it for writing and keeps it.
    chown(&tool, ADA_UID);
    let mut holder = t.spawn_agent(
        ADA,
        &format!("exec 3<>{} && echo held && exec sleep 600", tool.display()),
    );
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    // Root takes the file over: owner and mode are root's now.
    chown(&tool, 0);
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = t.watch();
    let r = human_must_decide(
        &t,
        &mut w,
        t.spawn_agent(ADA, &format!("cd / && sudo {}", tool.display())),
    );
    assert!(has(&r, "held open for writing"), "{:?}", r.warnings);
    // Legitimate: once nobody holds it, the rule decides.
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", ADA, "sleep"])
        .status();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        agent_ok(&t, &format!("cd / && sudo {}", tool.display())),
        "tool\n"
    );
    assert!(!v.join("pwned").exists());
}

/// Class 7: the human's grant to act as the agents gives what runs as an
/// agent a terminal of its own (`use_pty`): the agent's process never holds
/// the human's terminal, where it could push keystrokes (`TIOCSTI`).
#[test]
fn what_runs_as_an_agent_never_holds_the_humans_terminal() {
    struct DropIn(&'static str);
    impl Drop for DropIn {
        fn drop(&mut self) {
            let _ = fs::remove_file(self.0);
        }
    }
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPING: script (util-linux) is not installed");
        return;
    }
    let t = TestTown::new(Options::default());
    let town = nuketown_town::load(&t.town).unwrap();
    let grant = nuketown_hall::sudoers::human_grant(&town);
    assert!(grant.contains("use_pty"), "{grant}");
    let drop_in = DropIn("/etc/sudoers.d/nuketown-proof-pty-test");
    nuketown_host::sudoers::install(
        Path::new(nuketown_host::sudoers::MAIN),
        Path::new(drop_in.0),
        &grant,
    )
    .unwrap();
    // In a real terminal, as the human: the agent's stdin is another terminal.
    let o = Command::new("su")
        .args(["-s", "/bin/sh", HUMAN, "-c"])
        .arg(format!(
            "script -qec 'readlink /proc/self/fd/0; sudo -n -u {ADA} readlink /proc/self/fd/0' /dev/null"
        ))
        .output()
        .unwrap();
    let text = stdout(&o);
    // sudo's own terminal may put a NUL before what the command printed,
    // which the outer terminal echoes as `^@`: each line's tty is where
    // `/dev/pts/` starts.
    let ttys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.find("/dev/pts/").map(|i| l[i..].trim()))
        .collect();
    assert_eq!(ttys.len(), 2, "{text}{}", stderr(&o));
    assert_ne!(
        ttys[0], ttys[1],
        "the agent ran on the human's terminal: {text}"
    );
}

/// Class 8: the sudoers drop-in can never break sudo. It defines no global
/// name another drop-in could define too, and a candidate that would make
/// the whole configuration invalid is refused before it moves in.
#[test]
fn a_sudoers_drop_in_never_breaks_sudo() {
    struct DropIns(Vec<PathBuf>);
    impl Drop for DropIns {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = fs::remove_file(p);
            }
        }
    }
    let t = TestTown::new(Options::default());
    let old = PathBuf::from("/etc/sudoers.d/nuketown-proof-old-alias");
    let clash = PathBuf::from("/etc/sudoers.d/nuketown-proof-clash");
    let _cleanup = DropIns(vec![old.clone(), clash.clone()]);
    let whole_ok = || {
        let o = Command::new("visudo").arg("-c").output().unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    };
    // A drop-in an older nuketown wrote (its alias), as another town's would be.
    nuketown_host::sudoers::install(
        Path::new(nuketown_host::sudoers::MAIN),
        &old,
        "User_Alias NUKETOWN_AGENTS = root\nNUKETOWN_AGENTS ALL = (root) NOPASSWD: /usr/bin/true\n",
    )
    .unwrap();
    // Ours beside it: the whole configuration stays valid, and sudo works.
    let town = nuketown_town::load(&t.town).unwrap();
    let ours = format!(
        "{}{}",
        nuketown_hall::sudoers::render(&town),
        nuketown_hall::sudoers::human_grant(&town)
    );
    assert!(!ours.contains("_Alias"), "{ours}");
    nuketown_host::sudoers::install(
        Path::new(nuketown_host::sudoers::MAIN),
        Path::new(SUDOERS),
        &ours,
    )
    .unwrap();
    whole_ok();
    let o = t.agent(ADA, "/usr/bin/sudo -n -l");
    assert!(o.status.success(), "{}", stderr(&o));
    // A candidate valid alone but not beside the others: refused, nothing moved in.
    let e = nuketown_host::sudoers::install(
        Path::new(nuketown_host::sudoers::MAIN),
        &clash,
        "User_Alias NUKETOWN_AGENTS = root\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("every sudo would fail") && e.contains("already defined"),
        "{e}"
    );
    assert!(!clash.exists());
    whole_ok();
    let o = t.agent(ADA, "/usr/bin/sudo -n -l");
    assert!(o.status.success(), "sudo still works: {}", stderr(&o));
}
