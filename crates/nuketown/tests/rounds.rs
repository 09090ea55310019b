//! Rounds on this real host: `nuketown reset` on btrfs and on a plain
//! directory, persisted bytes across 100 rounds, resets killed at every step,
//! and device ACLs. Needs root (CI runs as root).

mod fixture;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use fixture::{as_user, mount_btrfs, stat, stderr, stdout, tree_sum, TestTown};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

fn town_text(t: &TestTown, human: &str, a: &str, b: &str, uid: u32) -> String {
    format!(
        "{}[agents.{a}]\nuid = {uid}\npersist.directories = [\"dev\", \".local/share/state\"]\npersist.files = [\".bash_history\"]\n\
[agents.{b}]\nuid = {}\n",
        t.header(human),
        uid + 1
    )
}

/// Put data in the persisted paths and litter the rest of the home.
fn work_in(agent: &str, round: usize) {
    let o = as_user(
        agent,
        &format!(
            "set -e; head -c 65536 /dev/urandom > ~/dev/blob{round}; echo line{round} >> ~/.bash_history; \
             mkdir -p ~/dev/deep/er && echo {round} > ~/dev/deep/er/n; echo s > ~/.local/share/state/s{round}; \
             echo junk > ~/junk{round}; mkdir -p ~/.cache/x && echo c > ~/.cache/x/c"
        ),
    );
    assert!(o.status.success(), "work as {agent}: {}", stderr(&o));
}

fn assert_levelled(home: &Path, round: usize) {
    assert!(
        !home.join(format!("junk{round}")).exists(),
        "round {round}: junk survived"
    );
    assert!(
        !home.join(".cache").exists(),
        "round {round}: ~/.cache survived"
    );
    assert!(
        home.join("AGENTS.md").exists(),
        "round {round}: identity not laid down"
    );
    assert_eq!(
        stat("%a %U", home),
        format!("700 {}", home.file_name().unwrap().to_string_lossy())
    );
}

fn rounds(t: &TestTown, town: &str, agent: &str, n: usize) {
    let home = t.agents_dir().join(agent);
    let persist = t.persist_dir().join("agents").join(agent);
    for round in 0..n {
        work_in(agent, round);
        let before = tree_sum(&persist);
        let out = t.ok(&["reset", agent, "--town", town]);
        assert!(out.contains(&format!("{agent}: levelled")), "{out}");
        assert_levelled(&home, round);
        assert_eq!(
            tree_sum(&persist),
            before,
            "round {round}: persisted bytes changed"
        );
        // The persisted paths are back in the home, with the data.
        assert_eq!(
            fs::read_to_string(home.join("dev/deep/er/n")).unwrap(),
            format!("{round}\n")
        );
        assert!(fs::read_to_string(home.join(".bash_history"))
            .unwrap()
            .ends_with(&format!("line{round}\n")));
    }
}

#[test]
fn hundred_rounds_on_btrfs_keep_every_persisted_byte() {
    let t = TestTown::new(&["nkhrh", "nkhrada", "nkhrvox"], &[]);
    if !mount_btrfs(&t, &t.agents_dir()) {
        return;
    }
    let town = t.write(
        "town.toml",
        &town_text(&t, "nkhrh", "nkhrada", "nkhrvox", 1935),
    );
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let home = t.agents_dir().join("nkhrada");
    let show = Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "the home must be a subvolume: {}",
        stderr(&show)
    );
    let vox_file = t.agents_dir().join("nkhrvox/AGENTS.md");
    let vox_before = fs::read(&vox_file).unwrap();

    rounds(&t, town, "nkhrada", 100);

    let show = Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(show.status.success(), "still a subvolume after 100 rounds");
    assert_eq!(
        fs::read(&vox_file).unwrap(),
        vox_before,
        "vox's home is not touched by ada's rounds"
    );
    fixture::wait_trash_empty(&t.agents_dir());
    assert!(
        t.ok(&["apply", town]).contains("nothing to change"),
        "a reset leaves exactly what apply lays down"
    );
}

#[test]
fn rounds_on_a_plain_directory() {
    let t = TestTown::new(&["nkhph", "nkhpada", "nkhpvox"], &[]);
    let town = t.write(
        "town.toml",
        &town_text(&t, "nkhph", "nkhpada", "nkhpvox", 1937),
    );
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    rounds(&t, town, "nkhpada", 10);
    assert!(t.ok(&["apply", town]).contains("nothing to change"));
}

#[test]
fn reset_ends_every_process_of_the_agent() {
    let t = TestTown::new(&["nkhkh", "nkhkada", "nkhkvox"], &[]);
    let town = t.write(
        "town.toml",
        &town_text(&t, "nkhkh", "nkhkada", "nkhkvox", 1939),
    );
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    use std::os::unix::process::CommandExt;
    // Processes running as the agents (uid/gid set before exec, so no race).
    let mut ada = Command::new("sleep")
        .arg("1000")
        .uid(1939)
        .gid(1939)
        .spawn()
        .unwrap();
    let mut vox = Command::new("sleep")
        .arg("1000")
        .uid(1940)
        .gid(1940)
        .spawn()
        .unwrap();
    t.ok(&["reset", "nkhkada", "--town", town]);
    let status = ada.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "ada's process must end with SIGKILL: {status:?}"
    );
    assert!(
        vox.try_wait().unwrap().is_none(),
        "vox's process must keep running"
    );
    vox.kill().unwrap();
    vox.wait().unwrap();
}

#[test]
fn a_reset_killed_at_any_step_is_repaired_and_never_exposes_a_home() {
    let t = TestTown::new(&["nkhih", "nkhiada", "nkhivox"], &[]);
    let on_btrfs = mount_btrfs(&t, &t.agents_dir());
    let town = t.write(
        "town.toml",
        &town_text(&t, "nkhih", "nkhiada", "nkhivox", 1941),
    );
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let home = t.agents_dir().join("nkhiada");
    let persist = t.persist_dir().join("agents/nkhiada");
    for (i, step) in ["stopped", "unmounted", "levelled", "laid-down"]
        .into_iter()
        .enumerate()
    {
        work_in("nkhiada", i);
        let before = tree_sum(&persist);
        let mut child = t
            .cmd(&["reset", "nkhiada", "--town", town])
            .env("NUKETOWN_TEST_STOP_AFTER", step)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).unwrap() {
            WaitStatus::Stopped(_, _) => {}
            other => panic!("reset did not pause after {step}: {other:?}"),
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "reset killed after {step}");

        // Whatever is there now exposes nothing: a home is 0700 and the agent's own.
        if home.exists() {
            assert_eq!(
                stat("%a %U", &home),
                "700 nkhiada",
                "after a kill at {step}"
            );
        }
        let peek = as_user("nkhivox", &format!("ls -A {}", home.display()));
        assert!(
            !peek.status.success() || stdout(&peek).trim().is_empty(),
            "vox sees ada's files after a kill at {step}"
        );
        for entry in fs::read_dir(t.agents_dir()).unwrap().flatten() {
            let mode = stat("%a", &entry.path());
            assert!(
                mode == "700" || entry.file_name() == "lost+found",
                "{:?} is {mode} after a kill at {step}",
                entry.path()
            );
        }
        assert_eq!(
            tree_sum(&persist),
            before,
            "persisted data changed by a kill at {step}"
        );

        // The next reset (even steps) or apply (odd steps) repairs it.
        if i % 2 == 0 {
            t.ok(&["reset", "nkhiada", "--town", town]);
        } else {
            t.ok(&["apply", town]);
        }
        assert!(
            home.join("AGENTS.md").exists(),
            "not repaired after a kill at {step}"
        );
        assert_eq!(tree_sum(&persist), before);
        assert_eq!(
            fs::read_to_string(home.join("dev/deep/er/n")).unwrap(),
            format!("{i}\n"),
            "persist not re-bound after {step}"
        );
        fixture::wait_trash_empty(&t.agents_dir());
        assert!(
            t.ok(&["plan", town]).contains("nothing to change"),
            "after repairing a kill at {step}"
        );
    }
    eprintln!(
        "interrupted resets checked on {}",
        if on_btrfs {
            "btrfs"
        } else {
            "a plain directory"
        }
    );
}

#[test]
fn device_rule_command_gives_exactly_that_agent_an_acl() {
    let t = TestTown::new(&["nkhdvh", "nkhdvada", "nkhdvvox"], &[]);
    let town = t.write(
        "town.toml",
        &town_text(&t, "nkhdvh", "nkhdvada", "nkhdvvox", 1943),
    );
    t.ok(&["apply", town.to_str().unwrap()]);
    let node = t.path("ttyTEST0");
    let mk = Command::new("mknod")
        .arg(&node)
        .args(["c", "4", "64"])
        .output()
        .unwrap();
    assert!(mk.status.success(), "mknod: {}", stderr(&mk));
    fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Exactly the command the udev rule runs, with the node for $env{DEVNAME}.
    let argv =
        nuketown_host::render::acl_command(nuketown_host::render::SETFACL, "nkhdvada", "rw", &node);
    let o = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let acl = stdout(
        &Command::new("getfacl")
            .args(["-cp"])
            .arg(&node)
            .output()
            .unwrap(),
    );
    let named: Vec<&str> = acl
        .lines()
        .filter(|l| l.starts_with("user:") && !l.starts_with("user::"))
        .collect();
    assert_eq!(named, ["user:nkhdvada:rw-"], "{acl}");
    assert!(nuketown_host::devices::has_acl(&node, "nkhdvada", "rw"));
    assert!(!nuketown_host::devices::has_acl(&node, "nkhdvvox", "r"));
}

#[test]
fn devices_shows_present_devices_and_apply_puts_the_acl_in_place() {
    let tty = Path::new("/sys/class/tty/ttyS0");
    let node = Path::new("/dev/ttyS0");
    let Ok(kind) = fs::read_to_string(tty.join("type")) else {
        eprintln!("SKIPPING: no /sys/class/tty/ttyS0 on this host");
        return;
    };
    let before = stdout(
        &Command::new("getfacl")
            .args(["-cp"])
            .arg(node)
            .output()
            .unwrap(),
    );
    if !node.exists()
        || before
            .lines()
            .any(|l| l.starts_with("user:") && !l.starts_with("user::"))
    {
        eprintln!("SKIPPING: /dev/ttyS0 missing or already carries ACLs");
        return;
    }
    let t = TestTown::new(&["nkhsh", "nkhsada"], &[]);
    let town = t.write(
        "town.toml",
        &format!(
            "{}[agents.nkhsada]\nuid = 1945\n[[agents.nkhsada.devices]]\nsubsystem = \"tty\"\nattrs = {{ type = \"{}\" }}\ngroup = \"dialout\"\n[[agents.nkhsada.devices]]\nsubsystem = \"tty\"\nattrs = {{ type = \"no-such-type\" }}\n",
            t.header("nkhsh"),
            kind.trim()
        ),
    );
    let town = town.to_str().unwrap();
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = Command::new("setfacl").args(["-b", "/dev/ttyS0"]).output();
        }
    }
    let _restore = Restore;
    t.ok(&["apply", town]);
    let shown = t.ok(&["devices", "--town", town]);
    assert!(shown.contains("nkhsada devices[0]: tty type="), "{shown}");
    assert!(
        shown.contains("present  /dev/ttyS0 (") && shown.contains("— ACL in place"),
        "{shown}"
    );
    assert!(
        shown.contains("nkhsada devices[1]: tty type=no-such-type (rw)\n  not present"),
        "{shown}"
    );
    // Reading it as the agent works now, without a replug.
    let o = as_user(
        "nkhsada",
        "test -r /dev/ttyS0 && test -w /dev/ttyS0 && echo yes",
    );
    assert_eq!(stdout(&o), "yes\n", "{}", stderr(&o));
}

#[test]
fn reset_restarts_home_manager_after_the_lay_down_and_restores_secrets() {
    let (h, a, uid) = ("nkhmh", "nkhmada", 1871);
    let t = TestTown::new(&[h, a], &[]);
    // A secret as sops-nix keeps it: root's, outside the home.
    let secret = t.path("run-secrets/gh");
    fs::create_dir_all(secret.parent().unwrap()).unwrap();
    fs::write(&secret, "gh-token\n").unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let town = t.write(
        "town.toml",
        &format!(
            "{}[agents.{a}]\nuid = {uid}\npersist.directories = [\"dev\"]\n\
             [agents.{a}.secrets.extraSecrets.gh]\npath = \".config/gh/token\"\nsource = \"{}\"\nmode = \"0400\"\n",
            t.header(h),
            secret.display()
        ),
    );
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let home = t.agents_dir().join(a);

    // NixOS with home-manager: its unit for the agent is installed and systemd
    // runs. This machine has no systemd, so `systemctl` is stood in by a
    // script that logs each call and, when home-manager is restarted, whether
    // the new home was laid down (key, secret, persisted path bound) by then.
    let unit = t.path(&format!("systemd/home-manager-{a}.service"));
    fs::write(&unit, "[Service]\nType=oneshot\n").unwrap();
    let bin = t.path("fakebin");
    fs::create_dir(&bin).unwrap();
    let log = t.path("systemctl.log");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {log}\n\
         if [ \"$1\" = --quiet ] && [ \"$2\" = is-active ]; then [ \"$3\" = user@{uid}.service ]; exit $?; fi\n\
         if [ \"$1\" = restart ] && [ -f {h}/.ssh/id_ed25519.pub ] && [ -f {h}/.config/gh/token ] && grep -q ' {h}/dev ' /proc/self/mountinfo; then echo '  home laid down' >> {log}; fi\n\
         exit 0\n",
        log = log.display(),
        h = home.display()
    );
    fs::write(bin.join("systemctl"), script).unwrap();
    fs::set_permissions(
        bin.join("systemctl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::create_dir(t.path("run-systemd")).unwrap();
    let reset = || {
        let out = t
            .cmd(&["reset", a, "--town", town])
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("NUKETOWN_SYSTEMD_RUNTIME_DIR", t.path("run-systemd"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let out = reset();
    assert!(
        out.contains(&format!(
            "{a}: home-manager laid its files down (home-manager-{a}.service)"
        )),
        "{out}"
    );
    let calls = fs::read_to_string(&log).unwrap();
    let at = |line: &str| {
        calls
            .lines()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no `{line}` in:\n{calls}"))
    };
    let stop = at(&format!("stop user@{uid}.service"));
    let hm = at(&format!("restart home-manager-{a}.service"));
    let laid = at("  home laid down");
    let start = at(&format!("start user@{uid}.service"));
    assert!(
        stop < hm && hm + 1 == laid && laid < start,
        "home-manager must run after the lay-down and before the agent's units start:\n{calls}"
    );
    // The secret is back in the new home, the agent's, with its mode.
    let token = home.join(".config/gh/token");
    assert_eq!(fs::read_to_string(&token).unwrap(), "gh-token\n");
    assert_eq!(stat("%a %U", &token), format!("400 {a}"));
    // Dotfiles are home-manager's there: nuketown leaves them to it.
    assert!(!home.join("AGENTS.md").exists());

    // Without home-manager's unit, nothing is restarted for it.
    fs::remove_file(&unit).unwrap();
    fs::write(&log, "").unwrap();
    let out = reset();
    assert!(!out.contains("home-manager"), "{out}");
    assert!(!fs::read_to_string(&log).unwrap().contains("home-manager"));
    assert!(home.join("AGENTS.md").exists());
    assert_eq!(fs::read_to_string(&token).unwrap(), "gh-token\n");
}
