//! Red team: root never follows a path an agent controls (issue 11, class 4).
//!
//! Each test attacks one guarantee of `apply`, `reset`, `plan` and `status`
//! as the agent would — as the agent's real Unix user (`su`), planting links,
//! FIFOs and hard links at every path root touches in its home and persist
//! dir, or racing root with a loop — and asserts that the attack fails (the
//! root-only victim is untouched: same bytes, mode, owner and link count;
//! nothing of it is copied into the agent's trees; a clear refusal names the
//! path) and that the legitimate use beside it still works. Needs root (CI
//! runs as root).

mod fixture;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use fixture::{
    as_user, output_within, snapshot, spawn_as, stat, stderr, stdout, tree_holds, wait_for,
    TestTown,
};

/// What a root-only file holds; it must never show up anywhere an agent can read.
const SECRET: &str = "ROOT-ONLY-SECRET-7f3a9c";

/// Root-only things an attacker points links at: `secret` (0600) and `dir`
/// (0755, holding `keep`), inside the test's root-only directory, like
/// `/etc/shadow` and `/usr/bin`.
struct Victim {
    top: PathBuf,
    secret: PathBuf,
    dir: PathBuf,
}

impl Victim {
    fn new(t: &TestTown) -> Victim {
        let top = t.path("victim");
        fs::create_dir(&top).unwrap();
        fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
        let secret = top.join("secret");
        fs::write(&secret, format!("{SECRET}\n")).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let dir = top.join("dir");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("keep"), "keep\n").unwrap();
        Victim { top, secret, dir }
    }

    fn snapshot(&self) -> Vec<String> {
        snapshot(&self.top)
    }
}

/// A town with one agent `a` (uid `uid`), persisting `dev` and `.bash_history`, plus `extra`.
fn town(t: &TestTown, human: &str, a: &str, uid: u32, extra: &str) -> PathBuf {
    t.write(
        "town.toml",
        &format!(
            "{}[agents.{a}]\nuid = {uid}\npersist.directories = [\"dev\"]\npersist.files = [\".bash_history\"]\n{extra}",
            t.header(human)
        ),
    )
}

fn home(t: &TestTown, a: &str) -> PathBuf {
    t.agents_dir().join(a)
}

fn persist(t: &TestTown, a: &str) -> PathBuf {
    t.persist_dir().join("agents").join(a)
}

/// Run a shell script as the agent; it must succeed.
fn agent(a: &str, script: &str) {
    let o = as_user(a, script);
    assert!(
        o.status.success(),
        "as {a}: {script}\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// The command failed with a refusal naming `path`.
fn assert_refused(out: &Output, path: &Path, why: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected a refusal of {}, but it succeeded:\n{}",
        path.display(),
        stdout(out)
    );
    assert!(
        err.contains(&format!("refusing {}:", path.display())) && err.contains(why),
        "expected `refusing {}: …{why}…`, got:\n{err}",
        path.display()
    );
}

/// Nothing of the secret reached the agent's trees.
fn assert_not_leaked(t: &TestTown, a: &str) {
    for dir in [home(t, a), persist(t, a)] {
        if let Some(p) = tree_holds(&dir, SECRET.as_bytes()) {
            panic!("the root-only secret was copied to {}", p.display());
        }
    }
}

fn cmd_within(t: &TestTown, args: &[&str], secs: u64) -> Output {
    output_within(&mut t.cmd(args), secs)
}

#[test]
fn links_planted_where_root_writes_files_are_replaced_never_followed() {
    let (h, a) = ("nkrah", "nkraada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town = town(&t, h, a, 1860, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let before = v.snapshot();

    // Every file root writes in the home, swapped for a link to a root-only file or directory.
    let s = v.secret.display();
    agent(
        a,
        &format!(
            "cd ~ && for f in .bashrc .profile AGENTS.md .ssh/id_ed25519 .ssh/id_ed25519.pub .config/git/allowed_signers .config/nuketown/identity.toml; do rm -f $f; ln -s {s} $f; done; rm -f .gitconfig; ln -s {} .gitconfig",
            v.dir.display()
        ),
    );
    let planned = t.ok(&["plan", town]);
    assert!(
        planned.contains(&format!("~ file {}/.bashrc", home(&t, a).display())),
        "{planned}"
    );
    let applied = t.ok(&["apply", town]);
    assert!(!applied.contains(SECRET), "{applied}");
    assert_eq!(v.snapshot(), before, "the victim changed");
    assert_not_leaked(&t, a);
    // Legitimate result: each is a regular file of the agent's with the declared contents.
    let h_ = home(&t, a);
    for f in [
        ".bashrc",
        ".profile",
        "AGENTS.md",
        ".gitconfig",
        ".ssh/id_ed25519.pub",
    ] {
        let m = fs::symlink_metadata(h_.join(f)).unwrap();
        assert!(m.is_file(), "{f} is not a regular file");
        assert_eq!(m.uid(), 1860, "{f}");
    }
    assert!(fs::read_to_string(h_.join("AGENTS.md"))
        .unwrap()
        .contains(&format!("You are **{a}**")));
    // The link planted where a private key used to be installed is removed, not followed.
    assert!(fs::symlink_metadata(h_.join(".ssh/id_ed25519")).is_err());
    assert_eq!(
        fs::read(h_.join(".ssh/id_ed25519.pub")).unwrap(),
        fs::read(
            t.persist_dir()
                .join(format!("agents/.nuketown-keys/{a}/id_ed25519.pub"))
        )
        .unwrap()
    );
    assert!(t.ok(&["apply", town]).contains("nothing to change"));
}

#[test]
fn directories_on_roots_way_planted_as_links_are_refused() {
    let (h, a) = ("nkrbh", "nkrbada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town = town(&t, h, a, 1861, "claudeCode.enable = true\n");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let before = v.snapshot();
    for d in [".config", ".ssh", ".claude", ".config/git"] {
        // Root would mkdir, chown and chmod there, and write files into it.
        agent(
            a,
            &format!("cd ~ && rm -rf {d} && ln -s {} {d}", v.dir.display()),
        );
        let out = t.run(&["apply", town]);
        assert_refused(&out, &home(&t, a).join(d), "symbolic link");
        assert_eq!(v.snapshot(), before, "the victim changed via ~/{d}");
        // Legitimate: with the link gone, apply lays the directory down again.
        agent(a, &format!("rm ~/{d}"));
        t.ok(&["apply", town]);
        assert!(fs::symlink_metadata(home(&t, a).join(d)).unwrap().is_dir());
    }
    assert_not_leaked(&t, a);
    assert!(t.ok(&["apply", town]).contains("nothing to change"));
}

#[test]
fn fifos_where_root_reads_never_hang_it() {
    let (h, a) = ("nkrch", "nkrcada");
    let t = TestTown::new(&[h, a], &[]);
    let town = town(&t, h, a, 1862, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let p = persist(&t, a);
    agent(
        a,
        &format!(
            "cd ~ && rm -f .bashrc .gitconfig .ssh/id_ed25519.pub && mkfifo .bashrc .gitconfig .ssh/id_ed25519.pub && mkdir -p {p}/.nuketown/matrix && mkfifo {p}/.nuketown/matrix/status.json",
            p = p.display()
        ),
    );
    // Root opens nothing that blocks: each finishes well within its deadline.
    let status = cmd_within(&t, &["status", "--town", town], 60);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("ssh      ssh-ed25519 "),
        "the key comes from root's store: {}",
        stdout(&status)
    );
    let plan = cmd_within(&t, &["plan", town], 60);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let applied = cmd_within(&t, &["apply", town], 120);
    assert!(applied.status.success(), "{}", stderr(&applied));
    for f in [".bashrc", ".gitconfig", ".ssh/id_ed25519.pub"] {
        assert!(
            fs::symlink_metadata(home(&t, a).join(f)).unwrap().is_file(),
            "{f} replaced by a file"
        );
    }
    assert!(t.ok(&["apply", town]).contains("nothing to change"));
}

#[test]
fn another_owners_file_hard_linked_into_an_agents_tree_is_never_read_or_bound() {
    let (h, a) = ("nkrdh", "nkrdada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town = town(&t, h, a, 1863, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    if fs::metadata(&v.secret).unwrap().dev() != fs::metadata(home(&t, a)).unwrap().dev() {
        eprintln!("SKIPPING: the victim and the homes are on different filesystems");
        return;
    }
    let before = v.snapshot();
    // fs.protected_hardlinks=1 stops the agent from linking a file it does
    // not own; where it is 0 it can. Root plants the links the agent could.
    let pubkey = home(&t, a).join(".ssh/id_ed25519.pub");
    fs::remove_file(&pubkey).unwrap();
    fs::hard_link(&v.secret, &pubkey).unwrap();
    for args in [&["status"][..], &["status", "--json"]] {
        let mut full = args.to_vec();
        full.extend(["--town", town]);
        let out = t.ok(&full);
        assert!(!out.contains(SECRET), "status printed the secret:\n{out}");
    }
    t.ok(&["apply", town]);
    assert!(!fs::read_to_string(&pubkey).unwrap().contains(SECRET));
    assert_eq!(v.snapshot(), before, "the victim changed");

    // As a persisted file, bound into the home by reset.
    let history = persist(&t, a).join(".bash_history");
    fs::remove_file(&history).unwrap();
    fs::hard_link(&v.secret, &history).unwrap();
    let out = t.run(&["reset", a, "--town", town]);
    assert_refused(&out, &history, "belongs to uid 0");
    assert!(
        !nuketown_host::system::is_mounted(&home(&t, a).join(".bash_history")),
        "the hard link was bound into the home"
    );
    assert_not_leaked_home(&t, a);
    // Legitimate: with the agent's own file back, the reset binds it.
    fs::remove_file(&history).unwrap();
    agent(a, &format!("echo mine > {}", history.display()));
    t.ok(&["reset", a, "--town", town]);
    assert_eq!(
        fs::read_to_string(home(&t, a).join(".bash_history")).unwrap(),
        "mine\n"
    );
    fs::remove_file(&history).unwrap(); // the persist dir held the link: nothing of the victim stays
    assert_eq!(v.snapshot(), before, "the victim changed");
}

/// Nothing of the secret in the home (the persist dir may hold a planted link).
fn assert_not_leaked_home(t: &TestTown, a: &str) {
    if let Some(p) = tree_holds(&home(t, a), SECRET.as_bytes()) {
        panic!("the root-only secret reached {}", p.display());
    }
}

#[test]
fn persisted_paths_planted_as_links_are_never_bound() {
    let (h, a) = ("nkreh", "nkreada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town = town(&t, h, a, 1864, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let before = v.snapshot();
    let p = persist(&t, a);

    // A persisted directory: the bind would show root's directory in the home.
    agent(
        a,
        &format!(
            "rm -rf {p}/dev && ln -s {} {p}/dev",
            v.dir.display(),
            p = p.display()
        ),
    );
    let out = t.run(&["reset", a, "--town", town]);
    assert_refused(&out, &p.join("dev"), "symbolic link");
    assert!(!nuketown_host::system::is_mounted(&home(&t, a).join("dev")));
    assert!(
        !home(&t, a).join("dev/keep").exists(),
        "root's directory is visible in the home"
    );
    assert_eq!(v.snapshot(), before);
    // Legitimate: a real directory again, and the reset binds it.
    agent(
        a,
        &format!(
            "rm {p}/dev && mkdir {p}/dev && echo mine > {p}/dev/x",
            p = p.display()
        ),
    );
    t.ok(&["reset", a, "--town", town]);
    assert_eq!(
        fs::read_to_string(home(&t, a).join("dev/x")).unwrap(),
        "mine\n"
    );

    // A persisted file.
    agent(
        a,
        &format!(
            "rm -f {p}/.bash_history && ln -s {} {p}/.bash_history",
            v.secret.display(),
            p = p.display()
        ),
    );
    let out = t.run(&["reset", a, "--town", town]);
    assert_refused(&out, &p.join(".bash_history"), "symbolic link");
    assert_not_leaked_home(&t, a);
    assert_eq!(v.snapshot(), before);
    agent(
        a,
        &format!(
            "rm {p}/.bash_history && : > {p}/.bash_history",
            p = p.display()
        ),
    );
    t.ok(&["reset", a, "--town", town]);
    assert!(t.ok(&["plan", town]).contains("nothing to change"));
}

#[test]
fn a_mount_point_planted_as_a_link_is_refused() {
    let (h, a) = ("nkrfh", "nkrfada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let v1 = town(&t, h, a, 1865, "");
    t.ok(&["apply", v1.to_str().unwrap()]);
    let before = v.snapshot();
    // The agent expects `notes` to be persisted next, and plants its mount point.
    agent(a, &format!("ln -s {} ~/notes", v.dir.display()));
    let v2 = t.write(
        "town2.toml",
        &format!(
            "{}[agents.{a}]\nuid = 1865\npersist.directories = [\"dev\", \"notes\"]\npersist.files = [\".bash_history\"]\n",
            t.header(h)
        ),
    );
    let v2 = v2.to_str().unwrap();
    let out = t.run(&["apply", v2]);
    assert_refused(&out, &home(&t, a).join("notes"), "symbolic link");
    assert!(
        !nuketown_host::system::is_mounted(&v.dir),
        "the persist dir was mounted over root's directory"
    );
    assert_eq!(v.snapshot(), before);
    // Legitimate: without the link, the new persisted path is bound.
    agent(a, "rm ~/notes");
    t.ok(&["apply", v2]);
    assert!(nuketown_host::system::is_mounted(
        &home(&t, a).join("notes")
    ));
    agent(a, "echo n > ~/notes/n");
    assert_eq!(
        fs::read_to_string(persist(&t, a).join("notes/n")).unwrap(),
        "n\n"
    );
}

#[test]
fn racing_links_while_root_applies_never_reach_root_files() {
    let (h, a) = ("nkrgh", "nkrgada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town = town(&t, h, a, 1866, "claudeCode.enable = true\n");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let before = v.snapshot();
    // The agent swaps directories root makes, chowns and writes into, and
    // files root writes and reads, between themselves and links to root's
    // files, as fast as it can, while root applies.
    // Links and real entries alternate, each state held for a few commands.
    let racer = format!(
        "cd ~ && touch .racing && i=0; while [ ! -e .stop ] && [ $i -lt 200000 ]; do \
           mv .claude .claude.x; mv .config .config.x; mv .ssh .ssh.x; mv .bashrc .bashrc.x; \
           ln -s {d} .claude; ln -s {d} .config; ln -s {d} .ssh; ln -s {s} .bashrc; \
           rm -f AGENTS.md .profile; rm -f .ssh.x/id_ed25519.pub; ln -s {s} .ssh.x/id_ed25519.pub; \
           rm -f .claude .config .ssh .bashrc; \
           mv .claude.x .claude || mkdir .claude; mv .config.x .config || mkdir .config; \
           mv .ssh.x .ssh || mkdir .ssh; mv .bashrc.x .bashrc; \
           rm -f AGENTS.md .profile .claude/CLAUDE.md .config/nuketown/identity.toml; \
           i=$((i+1)); done 2>/dev/null",
        d = v.dir.display(),
        s = v.secret.display()
    );
    let mut child = spawn_as(a, &racer);
    wait_for(&home(&t, a).join(".racing"), 30);
    let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
    for round in 0..12 {
        let out = cmd_within(&t, &["apply", town], 120);
        let err = stderr(&out);
        if out.status.success() {
            ok += 1;
        } else if err.contains("refusing ") {
            refused += 1;
        } else {
            // A file the agent deleted under root is fine; anything else is shown.
            other.push(err.clone());
        }
        assert!(!stdout(&out).contains(SECRET) && !err.contains(SECRET));
        let status = cmd_within(&t, &["status", "--town", town], 60);
        assert!(
            !stdout(&status).contains(SECRET),
            "status printed the secret"
        );
        assert_eq!(v.snapshot(), before, "the victim changed in round {round}");
    }
    fs::write(home(&t, a).join(".stop"), "").unwrap();
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-u", a])
        .status();
    let _ = child.wait();
    eprintln!(
        "12 applies under a racing agent: {ok} completed, {refused} refused, {} failed otherwise: {other:?}",
        other.len()
    );
    assert_not_leaked(&t, a);
    assert_eq!(v.snapshot(), before);
    // Legitimate: a new round, and the host matches the town again.
    t.ok(&["reset", a, "--town", town]);
    assert!(t.ok(&["apply", town]).contains("nothing to change"));
}

#[test]
fn declared_files_inside_an_agents_tree_are_read_beneath_it() {
    let (h, a) = ("nkrhh", "nkrhada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town0 = town(&t, h, a, 1867, "");
    t.ok(&["apply", town0.to_str().unwrap()]);
    let token = persist(&t, a).join("token");
    agent(a, &format!("echo agent-token > {}", token.display()));
    let town1 = t.write(
        "town1.toml",
        &format!(
            "{}[agents.{a}]\nuid = 1867\n[agents.{a}.secrets.extraSecrets.tok]\npath = \".config/tok\"\nsource = \"{}\"\nmode = \"0400\"\n",
            t.header(h),
            token.display()
        ),
    );
    let town1 = town1.to_str().unwrap();
    // Legitimate: the agent's own file is installed.
    t.ok(&["apply", town1]);
    let tok = home(&t, a).join(".config/tok");
    assert_eq!(fs::read_to_string(&tok).unwrap(), "agent-token\n");
    assert_eq!(stat("%a %U", &tok), format!("400 {a}"));
    let before = v.snapshot();
    // The agent points the declared file at root's secret.
    agent(
        a,
        &format!(
            "rm {t} && ln -s {} {t}",
            v.secret.display(),
            t = token.display()
        ),
    );
    let out = t.run(&["apply", town1]);
    assert_refused(&out, &token, "symbolic link");
    assert_not_leaked_home(&t, a);
    assert_eq!(v.snapshot(), before);
    // A hard link to it (where fs.protected_hardlinks=0 allows one) belongs to root: refused.
    if fs::metadata(&v.secret).unwrap().dev()
        == fs::metadata(token.parent().unwrap()).unwrap().dev()
    {
        agent(a, &format!("rm {}", token.display()));
        fs::hard_link(&v.secret, &token).unwrap();
        let out = t.run(&["apply", town1]);
        assert_refused(&out, &token, "belongs to uid 0");
        assert_not_leaked_home(&t, a);
        fs::remove_file(&token).unwrap();
    }
}

#[test]
fn status_shows_what_agents_write_escaped() {
    let (h, a) = ("nkrih", "nkriada");
    let t = TestTown::new(&[h, a], &[]);
    let town = town(&t, h, a, 1868, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let p = persist(&t, a);
    // A key comment that clears the screen, sets the title and reverses the
    // text; a chat status with a C1 CSI and a bidi override in its strings.
    agent(
        a,
        &format!(
            "k=$(cut -d' ' -f1,2 ~/.ssh/id_ed25519.pub); printf '%s evil\\033[2J\\033]0;owned\\007\\342\\200\\256exe.txt\\n' \"$k\" > ~/.ssh/id_ed25519.pub; \
             mkdir -p {p}/.nuketown/matrix && printf '%s' '{{\"connected\":true,\"rooms\":[\"\\u009b31mred\"],\"last\":\"\\u202egnp.exe\"}}' > {p}/.nuketown/matrix/status.json",
            p = p.display()
        ),
    );
    let text = t.ok(&["status", "--town", town]);
    let json = t.ok(&["status", "--json", "--town", town]);
    for (what, out) in [("text", &text), ("json", &json)] {
        for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
            assert!(
                !out.contains(bad),
                "status ({what}) printed {:?} raw:\n{out}",
                bad
            );
        }
    }
    assert!(
        text.contains("evil\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{202e}exe.txt"),
        "{text}"
    );
    // The file's word is not liveness: no bridge runs, so it is not connected.
    assert!(
        text.contains("chat     disconnected (the bridge is not running), 1 room"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ada = &v["agents"][0];
    assert_eq!(ada["chat"]["rooms"][0], "\\u{9b}31mred");
    assert_eq!(ada["chat"]["last"], "\\u{202e}gnp.exe");
}

#[test]
fn generated_keys_live_where_agents_cannot_plant_links() {
    let (h, a) = ("nkrjh", "nkrjada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town = town(&t, h, a, 1869, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let store = t.persist_dir().join(format!("agents/.nuketown-keys/{a}"));
    assert_eq!(stat("%a %U", &store.join("..")), "700 root");
    assert_eq!(stat("%a %U", &store), "700 root");
    assert_eq!(stat("%a %U", &store.join("id_ed25519.sealed")), "600 root");
    assert!(!store.join("id_ed25519").exists(), "no key in the clear");
    // The agent can neither reach nor replace what root keeps there.
    for attempt in [
        format!("ls {}", store.display()),
        format!("ln -s {} {}/x", v.secret.display(), store.display()),
        format!("mv {s} {s}.old", s = store.display()),
        format!(
            "mv {}/.nuketown-keys {}/keys.old",
            t.persist_dir().join("agents").display(),
            persist(&t, a).display()
        ),
    ] {
        let o = as_user(a, &attempt);
        assert!(!o.status.success(), "{a} could: {attempt}");
    }
    let before = v.snapshot();

    // A host from before the key store kept the key in the agent's persist
    // dir — where the agent can put anything: a link to root's secret, a hard
    // link, a key of its own making (of which it keeps a copy). None of it
    // becomes the agent's key; a new one is made in the store, the file goes,
    // and root's files are untouched.
    let old = persist(&t, a).join(".nuketown/ssh/id_ed25519");
    let sealed = store.join("id_ed25519.sealed");
    let fresh_key = |what: &str| {
        fs::remove_dir_all(&store).unwrap();
        let applied = t.ok(&["apply", town]);
        assert!(
            applied.contains("is not taken as") && applied.contains("new key"),
            "{what}: {applied}"
        );
        assert_eq!(stat("%a %U", &sealed), "600 root", "{what}");
        assert!(
            fs::symlink_metadata(&old).is_err(),
            "{what}: the file there goes"
        );
        assert_not_leaked_home(&t, a);
        assert_eq!(v.snapshot(), before, "{what}");
    };
    agent(
        a,
        &format!(
            "mkdir -p {d} && ln -s {} {o}",
            v.secret.display(),
            d = old.parent().unwrap().display(),
            o = old.display()
        ),
    );
    fresh_key("a link to root's secret");
    if fs::metadata(&v.secret).unwrap().dev() == fs::metadata(persist(&t, a)).unwrap().dev() {
        fs::hard_link(&v.secret, &old).unwrap();
        fresh_key("a hard link to root's secret");
        assert!(v.secret.exists(), "root's own name for it stays");
    }
    agent(
        a,
        &format!(
            "ssh-keygen -q -t ed25519 -N '' -C planted@key -f {}",
            old.display()
        ),
    );
    let planted = fs::read_to_string(format!("{}.pub", old.display())).unwrap();
    fresh_key("a key the agent made");
    let installed = fs::read_to_string(home(&t, a).join(".ssh/id_ed25519.pub")).unwrap();
    assert_ne!(
        installed.split_whitespace().nth(1),
        planted.split_whitespace().nth(1),
        "the town's key is not one the agent knows"
    );
    assert!(t.ok(&["apply", town]).contains("nothing to change"));
}

#[test]
fn roots_directories_are_out_of_an_agents_reach_and_checked() {
    let (h, a) = ("nkrkh", "nkrkada");
    let t = TestTown::new(&[h, a], &[]);
    let town = town(&t, h, a, 1870, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let agents = t.agents_dir();
    for attempt in [
        format!("ln -s / {}/evil", agents.display()),
        format!("mkdir {}/.{a}.new-round", agents.display()),
        format!("mv ~ {}/moved", agents.display()),
        format!("ln -s /etc {}/.nuketown-trash", agents.display()),
        format!("mv {p} {p}.x", p = persist(&t, a).display()),
    ] {
        let o = as_user(a, &attempt);
        assert!(!o.status.success(), "{a} could: {attempt}");
    }
    // A host where agentsDir was given to the agent by mistake: reset refuses
    // to work below it (and levels nothing); apply gives it back to root.
    agent(a, "echo junk > ~/junk");
    std::os::unix::fs::chown(&agents, Some(1870), Some(1870)).unwrap();
    let out = t.run(&["reset", a, "--town", town]);
    assert_refused(&out, &agents, "belongs to uid 1870, not root");
    assert!(home(&t, a).join("junk").exists(), "nothing was levelled");
    t.ok(&["apply", town]);
    assert_eq!(stat("%a %U", &agents), "755 root");
    t.ok(&["reset", a, "--town", town]);
    assert!(!home(&t, a).join("junk").exists());
}

#[test]
fn one_agents_links_never_keep_the_others_from_apply_or_their_round() {
    let (h, a, b) = ("nkrlh", "nkrlada", "nkrlvox");
    let t = TestTown::new(&[h, a, b], &[]);
    let v = Victim::new(&t);
    let town = t.write(
        "town.toml",
        &format!(
            "{}[agents.{a}]\nuid = 1872\npersist.directories = [\"dev\"]\n[agents.{b}]\nuid = 1873\npersist.directories = [\"dev\"]\n",
            t.header(h)
        ),
    );
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    let before = v.snapshot();
    let pa = persist(&t, a);
    agent(
        a,
        &format!(
            "rm -rf {p}/dev && ln -s {} {p}/dev",
            v.dir.display(),
            p = pa.display()
        ),
    );
    agent(b, "echo junk > ~/junk && rm ~/AGENTS.md");
    // apply repairs b, and says what it refused of a's.
    let out = t.run(&["apply", town]);
    assert_refused(&out, &pa.join("dev"), "symbolic link");
    assert!(home(&t, b).join("AGENTS.md").exists(), "b was not repaired");
    // The boot-time `reset --all`: b gets its new round although a's fails.
    let out = t.run(&["reset", "--all", "--town", town]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("the reset failed for {a}")),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{a}: NOT reset: "))
            && stdout(&out).contains(&format!("refusing {}: ", pa.join("dev").display())),
        "{}",
        stdout(&out)
    );
    assert!(
        !home(&t, b).join("junk").exists(),
        "b's round did not happen"
    );
    assert!(home(&t, b).join("AGENTS.md").exists());
    assert!(nuketown_host::system::is_mounted(&home(&t, b).join("dev")));
    // a has a fresh home without the refused bind, and nothing of root's.
    assert!(home(&t, a).join("AGENTS.md").exists());
    assert!(!nuketown_host::system::is_mounted(&home(&t, a).join("dev")));
    assert!(!home(&t, a).join("dev/keep").exists());
    assert_eq!(v.snapshot(), before);
}

#[test]
fn a_nested_subvolume_never_keeps_apply_from_the_host() {
    let (h, a) = ("nkrmh", "nkrmada");
    let t = TestTown::new(&[h, a], &[]);
    if !fixture::mount_btrfs(&t, &t.agents_dir()) {
        return;
    }
    let town = town(&t, h, a, 1874, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    // Any user may create a subvolume where it can write; `btrfs subvolume
    // delete` of the home then refuses ("Directory not empty").
    agent(
        a,
        "btrfs subvolume create ~/nest >/dev/null && echo x > ~/nest/f && btrfs subvolume create ~/nest/deeper >/dev/null",
    );
    t.ok(&["reset", a, "--town", town]);
    assert!(!home(&t, a).join("nest").exists());
    // The levelled home waits in the trash; apply clears it, for everyone.
    let applied = t.ok(&["apply", town]);
    assert!(applied.contains("- levelled homes in"), "{applied}");
    fixture::wait_trash_empty(&t.agents_dir());
    assert!(t.ok(&["apply", town]).contains("nothing to change"));
}

#[test]
fn the_host_lock_is_roots_alone() {
    let (h, a) = ("nkrnh", "nkrnada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town = town(&t, h, a, 1875, "");
    let town = town.to_str().unwrap();
    t.ok(&["apply", town]);
    // The lock lives in a directory everyone may write, like /run/lock.
    let locks = t.path("lock");
    fs::create_dir(&locks).unwrap();
    fs::set_permissions(&locks, fs::Permissions::from_mode(0o1777)).unwrap();
    let lock = locks.join("nuketown-users.lock");
    let with_lock = |args: &[&str]| {
        let mut c = t.cmd(args);
        c.env("NUKETOWN_LOCK", &lock);
        output_within(&mut c, 60)
    };
    // A link planted at the lock's name: root would have created the file it names.
    let target = v.top.join("created-by-root");
    agent(a, &format!("ln -s {} {}", target.display(), lock.display()));
    let out = with_lock(&["apply", town]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!target.exists(), "root followed the link");
    assert_eq!(stat("%a %U", &lock), "600 root");
    // Root's lock file cannot be opened (so not locked) by the agent.
    let o = as_user(a, &format!("flock -n {} true", lock.display()));
    assert!(!o.status.success(), "the agent could lock root's lock file");
    // A lock file the agent made and holds forever does not stall root.
    fs::remove_file(&lock).unwrap();
    agent(a, &format!(": > {}", lock.display()));
    let holder = format!(
        "flock {l} sh -c 'touch {l}.held; while [ ! -e {l}.stop ]; do sleep 1; done'",
        l = lock.display()
    );
    let mut child = spawn_as(a, &holder);
    wait_for(&locks.join("nuketown-users.lock.held"), 30);
    let out = with_lock(&["reset", a, "--town", town]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stat("%a %U", &lock), "600 root");
    let _ = child.wait();
    assert_eq!(snapshot(&v.top).len(), 4, "nothing new in root's directory");
}

#[test]
fn a_gpg_key_kept_in_an_agents_tree_is_read_beneath_it() {
    let (h, a) = ("nkroh", "nkroada");
    let t = TestTown::new(&[h, a], &[]);
    let v = Victim::new(&t);
    let town0 = town(&t, h, a, 1876, "");
    t.ok(&["apply", town0.to_str().unwrap()]);
    // Where the NixOS module has sops-nix place it: in the agent's persist dir, the agent's.
    let gnupg = t.path("gnupg");
    fs::create_dir(&gnupg).unwrap();
    fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let o = std::process::Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    gpg(&[
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        &format!("{a} <{a}@test.local>"),
        "ed25519",
        "sign",
        "never",
    ]);
    let armored = gpg(&[
        "--batch",
        "--armor",
        "--export-secret-keys",
        &format!("{a}@test.local"),
    ]);
    let key = persist(&t, a).join("gpg-key.asc");
    fs::write(&key, &armored).unwrap();
    std::os::unix::fs::chown(&key, Some(1876), Some(1876)).unwrap();
    let town1 = town(
        &t,
        h,
        a,
        1876,
        &format!("secrets.gpgKey = \"{}\"\n", key.display()),
    );
    let town1 = town1.to_str().unwrap();
    // Legitimate: imported (gpg parses it as the agent), commits signed with it.
    let applied = t.ok(&["apply", town1]);
    assert!(applied.contains("+ gpg key"), "{applied}");
    let fmt = as_user(a, "git config --global gpg.format");
    assert_eq!(stdout(&fmt), "openpgp\n");
    let before = v.snapshot();
    // The agent points it at root's secret.
    agent(
        a,
        &format!(
            "rm {k} && ln -s {} {k}",
            v.secret.display(),
            k = key.display()
        ),
    );
    let out = t.run(&["apply", town1]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "refusing {}: it is a symbolic link",
            key.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_not_leaked_home(&t, a);
    assert_eq!(v.snapshot(), before);
    let _ = std::process::Command::new("gpgconf")
        .env("GNUPGHOME", &gnupg)
        .args(["--kill", "all"])
        .output();
}
