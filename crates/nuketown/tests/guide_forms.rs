//! The module guide's forms on a real host (issue 22): a `town.toml` written
//! as a reader of the guide writes it — sops secret names, persist as a
//! list, sudo commands as command lines — applied here does what the same
//! town in the long forms does (`status --json` of both, the sudoers and
//! udev files they write, the humans' allowed signers); the human verifies
//! the agent's signed commits in their own checkout, GPG and SSH; and
//! `portal-<agent>`, run by the human in real tmux, opens the agent's pane
//! in its clone. Root only (CI runs as root): real users, sops, gpg, git,
//! the hall's key sockets, tmux and fzf.

mod fixture;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fixture::{as_user, stat, stderr, stdout, TestTown};

const HUMAN: &str = "nkgh";
/// The forge is the agent's: the human lets their git read another user's repository.
const TRUST_FORGE: &str = "git config --global --add safe.directory '*'";
const ADA: &str = "nkgada";

/// `out` of `what`, which must have succeeded; its stdout.
fn succeeded(what: impl std::fmt::Debug, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Run a command; require success; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    succeeded(cmd, out)
}

/// `script` as `user`; require success; its stdout.
fn ok_as(user: &str, script: &str) -> String {
    succeeded((user, script), as_user(user, script))
}

/// The agent's keys and token, and a sops file holding them under the
/// agent's name (as sops-nix lays a sops file out), encrypted for a fresh
/// age key.
struct Secrets {
    /// The sops file.
    file: PathBuf,
    /// The age key that opens it (`SOPS_AGE_KEY_FILE` for apply).
    age_key: PathBuf,
    /// The same keys as plain files (root's, 0600): the long form's paths.
    ssh_key: PathBuf,
    gpg_key: PathBuf,
    /// The token's text.
    token: String,
}

fn secrets(dir: &Path, agent: &str) -> Secrets {
    let dir = dir.join("keys");
    fs::create_dir(&dir).unwrap();
    let age_key = dir.join("age.txt");
    ok(Command::new("age-keygen").arg("-o").arg(&age_key));
    let recipient = ok(Command::new("age-keygen").arg("-y").arg(&age_key));
    let ssh_key = dir.join("id_ed25519");
    ok(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", agent, "-f"])
        .arg(&ssh_key));
    let gnupg = dir.join("gnupg");
    fs::create_dir(&gnupg).unwrap();
    fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let email = format!("{agent}@test.local");
    ok(Command::new("gpg").env("GNUPGHOME", &gnupg).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        &format!("{agent} <{email}>"),
        "ed25519",
        "sign",
        "never",
    ]));
    // A second user id claiming to be the human: it must never reach the
    // human's keyring (the agent's signatures would show as theirs).
    ok(Command::new("gpg").env("GNUPGHOME", &gnupg).args([
        "--batch",
        "--quick-add-uid",
        &email,
        &format!("Test Human <{HUMAN}@test.local>"),
    ]));
    let armored = ok(Command::new("gpg").env("GNUPGHOME", &gnupg).args([
        "--batch",
        "--armor",
        "--export-secret-keys",
        &email,
    ]));
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &gnupg)
        .args(["--kill", "all"])
        .output();
    let gpg_key = dir.join("gpg.asc");
    fs::write(&gpg_key, &armored).unwrap();
    let token = "forge-token-for-the-test\n".to_string();
    let block = |text: &str| {
        text.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let plain = dir.join("plain.yaml");
    fs::write(
        &plain,
        format!(
            "{agent}:\n  ssh-key: |\n{}  gpg-key: |\n{}  forge-token: |\n{}",
            block(&fs::read_to_string(&ssh_key).unwrap()),
            block(&armored),
            block(&token)
        ),
    )
    .unwrap();
    let file = dir.join("secrets.yaml");
    let encrypted = ok(Command::new("sops")
        .args(["--encrypt", "--age", recipient.trim()])
        .args(["--input-type", "yaml", "--output-type", "yaml"])
        .arg(&plain));
    fs::write(&file, encrypted).unwrap();
    fs::remove_file(&plain).unwrap();
    Secrets {
        file,
        age_key,
        ssh_key,
        gpg_key,
        token,
    }
}

/// What both spellings share: the human, the agent, its devices and Claude Code.
fn common(t: &TestTown, s: &Secrets) -> String {
    format!(
        "{}sopsFile = \"{}\"\nprojectDirs = [\"~/dev\"]\n\n[agents.{ADA}]\nuid = 1981\nrole = \"firmware\"\n\
claudeCode.enable = true\nportal.command = \"echo AGENT=$(whoami) AT=$(pwd); exec sleep 600\"\n\
devices = [{{ subsystem = \"tty\", attrs = {{ idVendor = \"2e8a\", idProduct = \"000a\" }} }}]\n",
        t.header(HUMAN),
        s.file.display()
    )
}

/// The town as the module guide writes it.
fn guide_town(t: &TestTown, s: &Secrets) -> String {
    format!(
        "{}persist = [\"projects\", \".config/claude\"]\n\
secrets.sshKey = \"{ADA}/ssh-key\"\nsecrets.gpgKey = \"{ADA}/gpg-key\"\n\
secrets.extraSecrets = {{ forge = \"{ADA}/forge-token\" }}\n\
sudo = {{ enable = true, commands = [\"systemctl\", \"dmesg --follow\"] }}\n",
        common(t, s)
    )
}

/// The same town in the long forms (the keys as plain files).
fn long_town(t: &TestTown, s: &Secrets) -> String {
    format!(
        "basePackages = [\"git\", \"ripgrep\", \"fd\", \"jq\", \"curl\", \"tree\"]\n{}\
persist = {{ directories = [\"projects\", \".config/claude\"], files = [] }}\n\
secrets.sshKey = \"{}\"\nsecrets.gpgKey = \"{}\"\n\
secrets.extraSecrets.forge = {{ source = \"{ADA}/forge-token\", mode = \"0400\" }}\n\
claudeCode.agentName = \"{ADA}-firmware\"\n\
[agents.{ADA}.sudo]\nenable = true\n\
commands = [{{ argv = [\"systemctl\"], prefix = true }}, {{ argv = [\"dmesg\", \"--follow\"] }}]\n",
        common(t, s),
        s.ssh_key.display(),
        s.gpg_key.display()
    )
}

/// Apply `text` in `t` (sops opening the file with `age_key`); what the host
/// then shows: `status --json`, the sudoers and udev files, the allowed
/// signers, with the test's directory written as `<town>`.
fn apply(t: &TestTown, text: &str, age_key: &Path) -> (String, Vec<String>) {
    let town = t.write("town.toml", text);
    let out = t
        .cmd(&["apply", town.to_str().unwrap()])
        .env("SOPS_AGE_KEY_FILE", age_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let applied = stdout(&out);
    let status = t.ok(&["status", "--json", "--town", town.to_str().unwrap()]);
    let here = t.dir.path().display().to_string();
    let files = [
        "sudoers.d/nuketown",
        "udev/70-nuketown.rules",
        "etc/allowed_signers",
        "etc/gitconfig",
        "gitconfig",
    ]
    .map(|f| {
        fs::read_to_string(t.path(f))
            .unwrap()
            .replace(&here, "<town>")
    });
    let mut shown = vec![status.replace(&here, "<town>")];
    shown.extend(files);
    (applied, shown)
}

#[test]
fn a_town_in_the_guides_forms_applies_as_its_long_form() {
    // One set of keys and one sops file (root's, outside both towns).
    let keys = tempfile::tempdir().unwrap();
    let s = secrets(keys.path(), ADA);
    let users = [HUMAN, ADA];
    let long = {
        let t = TestTown::new(&users, &[]);
        apply(&t, &long_town(&t, &s), &s.age_key).1
    };
    let t = TestTown::new(&users, &[]);
    let (applied, guide) = apply(&t, &guide_town(&t, &s), &s.age_key);
    // status, sudoers, udev rules, allowed signers, git configuration.
    for (g, l) in guide.iter().zip(&long) {
        assert_eq!(g, l, "the guide's town and its long form differ");
    }
    assert!(
        applied.contains(&format!("+ ssh key of {ADA} imported into the town's key store from sops secret {ADA}/ssh-key in {}", s.file.display())),
        "{applied}"
    );
    assert!(
        applied
            .contains("basePackages (git, ripgrep, fd, jq, curl, tree) take effect only on NixOS"),
        "plan must say what this host does not do: {applied}"
    );

    // The key the town holds is the sops file's, never in the home.
    let public = ok(Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&s.ssh_key));
    let key_words = |k: &str| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let home = t.agents_dir().join(ADA);
    assert_eq!(
        key_words(&fs::read_to_string(home.join(".ssh/id_ed25519.pub")).unwrap()),
        key_words(&public)
    );
    assert!(!home.join(".ssh/id_ed25519").exists());
    assert!(fixture::tree_holds(&home, b"PRIVATE KEY").is_none());
    // The token, installed where sops-nix would put it, the agent's alone.
    let token = t.path("secrets").join(ADA).join("forge-token");
    assert_eq!(fs::read_to_string(&token).unwrap(), s.token);
    assert_eq!(stat("%a %U", &token), format!("400 {ADA}"));
    assert_eq!(ok_as(ADA, &format!("cat {}", token.display())), s.token);
    // The agent file is <name>-<role>, and the prompt names the device.
    let agent_file =
        fs::read_to_string(home.join(format!(".claude/agents/{ADA}-firmware.md"))).unwrap();
    assert!(
        agent_file.contains("## Hardware Access") && agent_file.contains("idVendor=2e8a"),
        "{agent_file}"
    );
    // The portal commands are installed for the human.
    assert!(fs::read_to_string(t.path(&format!("bin/portal-{ADA}")))
        .unwrap()
        .contains(&format!(
            "portal --town {} --pick '{ADA}'",
            sh(&t.path("etc/town.json"))
        )));

    // ada signs with the GPG key from the sops file; she pushes to a forge.
    let forge = t.path("forge.git");
    ok(Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&forge));
    ok(Command::new("chown").args(["-R", ADA]).arg(&forge));
    ok_as(
        ADA,
        &format!(
            "cd ~/projects && git clone -q {f} demo && cd demo && echo throttle > pid.c && git add pid.c \
             && git commit -qm 'Scale P with throttle' && git push -q origin HEAD:main",
            f = forge.display()
        ),
    );
    // The human, in their own checkout, verifies it: ada's public key is in
    // their keyring (and nothing secret of hers).
    let log = ok_as(
        HUMAN,
        &format!(
            "{TRUST_FORGE} && mkdir -p ~/dev && cd ~/dev && git clone -q -b main {} demo && cd demo \
             && git verify-commit HEAD 2>&1 && git log --show-signature --author={ADA} 2>&1",
            forge.display()
        ),
    );
    assert!(
        log.contains(&format!("Good signature from \"{ADA} <{ADA}@test.local>\"")),
        "{log}"
    );
    assert!(ok_as(HUMAN, "gpg --batch --list-secret-keys 2>/dev/null").is_empty());
    let uids: Vec<String> = ok_as(HUMAN, "gpg --batch --with-colons --list-keys 2>/dev/null")
        .lines()
        .filter(|l| l.starts_with("uid:"))
        .map(|l| l.split(':').nth(9).unwrap_or("").to_string())
        .collect();
    assert_eq!(uids, [format!("{ADA} <{ADA}@test.local>")]);
    let _ = Command::new("pkill")
        .args(["-u", ADA, "gpg-agent"])
        .output();
    let _ = Command::new("pkill")
        .args(["-u", HUMAN, "gpg-agent"])
        .output();
}

/// A path, single-quoted for sh.
fn sh(p: &Path) -> String {
    nuketown_host::portal::sh_quote(&p.display().to_string())
}

/// The town hall on this test's paths (serving the agents' key sockets),
/// stopped on drop.
struct Hall(std::process::Child);

impl Hall {
    fn start(t: &TestTown, town: &Path) -> Hall {
        let notify_path = t.path("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let log = fs::File::create(t.path("hall.log")).unwrap();
        let child = t
            .cmd(&["--town", town.to_str().unwrap(), "hall"])
            .arg("--approver-socket")
            .arg(t.path("approvers.sock"))
            .arg("--mode-file")
            .arg(t.path("mode"))
            .arg("--audit-log")
            .arg(t.path("audit.jsonl"))
            .arg("--ssh-agent-dir")
            .arg(t.path("ssh"))
            .env("NUKETOWN_HALL_SOCKET", t.path("hall.sock"))
            .env("NUKETOWN_ASK_SOCKET", t.path("ask.sock"))
            .env("NUKETOWN_REBUILD_SOCKET", t.path("rebuild.sock"))
            .env("NUKETOWN_REBUILD_HISTORY", t.path("rebuilds.jsonl"))
            .env("NUKETOWN_NFTABLES_FILE", t.path("nftables.nft"))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let hall = Hall(child);
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "the hall never said READY=1 ({e}):\n{}",
                fs::read_to_string(t.path("hall.log")).unwrap_or_default()
            )
        });
        assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
        hall
    }
}

impl Drop for Hall {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_human_verifies_an_ssh_signed_commit_and_a_rotation_reaches_their_git() {
    let (h, a) = ("nkgsh", "nkgsada");
    let t = TestTown::new(&[h, a], &[]);
    let town = t.write(
        "town.toml",
        &format!(
            "{}[agents.{a}]\nuid = 1982\npersist = [\"projects\"]\n",
            t.header(h)
        ),
    );
    t.ok(&["apply", town.to_str().unwrap()]);
    let signers = t.path("etc/allowed_signers");
    let published = fs::read_to_string(&signers).unwrap();
    let public = fs::read_to_string(t.agents_dir().join(a).join(".ssh/id_ed25519.pub")).unwrap();
    let key = |k: &str| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert!(
        published.contains(&format!(
            "{a}@test.local namespaces=\"git\" {}",
            key(&public)
        )),
        "{published}"
    );
    // The system git configuration names them, for every user.
    assert!(fs::read_to_string(t.path("gitconfig"))
        .unwrap()
        .contains(&t.path("etc/gitconfig").display().to_string()));
    // authorized_keys lines for the machines the agent reaches.
    let lines = t.ok(&[
        "keys",
        "list",
        "--authorized-keys",
        "--town",
        town.to_str().unwrap(),
    ]);
    assert_eq!(lines, format!("{} {a}@test.local\n", key(&public)));
    // A declared public key must be the one the town holds.
    let other =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlHYbUiPeSlOrLHQaxnsDZrshvi1pHJv89LXFa4/04X other";
    let wrong = t.write(
        "wrong.toml",
        &format!(
            "{}[agents.{a}]\nuid = 1982\npersist = [\"projects\"]\nkeys.publicKey = \"{other}\"\n",
            t.header(h)
        ),
    );
    let out = t.run(&["plan", wrong.to_str().unwrap()]);
    assert!(
        !out.status.success()
            && stderr(&out).contains(&format!(
                "agents.{a}.keys.publicKey is not the key the town holds for {a}"
            )),
        "{}",
        stderr(&out)
    );

    let _hall = Hall::start(&t, &town);
    let forge = t.path("forge.git");
    ok(Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&forge));
    ok(Command::new("chown").args(["-R", a]).arg(&forge));
    let socket = nuketown_keys::agent::socket_path(&t.path("ssh"), a);
    ok_as(
        a,
        &format!(
            "export SSH_AUTH_SOCK={}; cd ~/projects && git clone -q {f} demo && cd demo \
             && echo x > f && git add f && git commit -qm 'Signed by the town' && git push -q origin HEAD:main",
            socket.display(),
            f = forge.display()
        ),
    );
    let system = format!("GIT_CONFIG_SYSTEM={}", sh(&t.path("gitconfig")));
    let verify = format!(
        "cd ~/dev/demo && git fetch -q && {system} git log -1 --format=%G? origin/main \
         && {system} git log -1 --show-signature --author={a} origin/main 2>&1"
    );
    let out = ok_as(
        h,
        &format!(
            "{TRUST_FORGE} && mkdir -p ~/dev && git clone -q -b main {} ~/dev/demo && {verify}",
            forge.display()
        ),
    );
    assert!(out.starts_with("G\n"), "{out}");
    assert!(
        out.contains(&format!(
            "Good \"git\" signature for {a}@test.local with ED25519 key"
        )),
        "{out}"
    );

    // A rotation reaches the human's git at once: the new key is allowed,
    // the old one no longer is.
    let rotated = t.ok(&["keys", "rotate", a, "--town", town.to_str().unwrap()]);
    assert!(
        rotated.contains(&format!("~ file {}", signers.display())),
        "{rotated}"
    );
    let after = fs::read_to_string(&signers).unwrap();
    assert!(!after.contains(&key(&public)), "{after}");
    assert_ne!(after, published);
    let out = ok_as(h, &verify);
    assert!(out.starts_with('U') || out.starts_with('E'), "{out}");
}

/// A sudoers drop-in in the real /etc/sudoers.d (real sudo reads it: the
/// human's grant to act as the agent), removed when the test ends.
struct RealSudoers(&'static str);

impl Drop for RealSudoers {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

#[test]
fn portal_ada_run_by_the_human_in_tmux_picks_the_project_and_opens_her_clone() {
    let (h, a) = ("nkgph", "nkgpada");
    let t = TestTown::new(&[h, a], &[]);
    let sudoers = RealSudoers("/etc/sudoers.d/nkgp-portal-test");
    let town = t.write(
        "town.toml",
        &format!(
            "{}projectDirs = [\"~/dev\"]\n[agents.{a}]\nuid = 1983\nportal.enable = true\n\
             portal.command = \"echo AGENT=$(whoami) AT=$(pwd); exec sleep 600\"\n",
            t.header(h)
        ),
    );
    let out = t
        .cmd(&["apply", town.to_str().unwrap()])
        .env("NUKETOWN_SUDOERS", sudoers.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // The town apply published is what portal-<agent> reads.
    for user in [a, h] {
        ok_as(user, "mkdir -p ~/dev/rotorflight/.git ~/dev/other/.git");
    }
    let bin = t.path("bin");
    let tmux_dir = t.path("tmux-human");
    fs::create_dir(&tmux_dir).unwrap();
    ok(Command::new("chown").arg(h).arg(&tmux_dir));
    let tmux = |args: &str| {
        as_user(
            h,
            &format!("TMUX_TMPDIR={} tmux {args}", tmux_dir.display()),
        )
    };
    struct Server<'a>(&'a dyn Fn(&str) -> Output);
    impl Drop for Server<'_> {
        fn drop(&mut self) {
            let _ = (self.0)("kill-server");
        }
    }
    // The human's own tmux session, where they type `portal-<agent>`.
    let o = tmux(&format!(
        "new-session -d -s work -x 200 -y 50 'PATH={}:$PATH exec bash --norc'",
        bin.display()
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let _server = Server(&tmux);
    let o = tmux(&format!("send-keys -t work 'portal-{a}' Enter"));
    assert!(o.status.success(), "{}", stderr(&o));
    // fzf lists the human's projects; the human picks one.
    wait_pane(&tmux, "work", "rotorflight");
    let o = tmux("send-keys -t work rotorfl");
    assert!(o.status.success(), "{}", stderr(&o));
    // fzf has matched the query (one of the three choices) before Enter picks it.
    wait_pane(&tmux, "work", "1/3");
    let o = tmux("send-keys -t work Enter");
    assert!(o.status.success(), "{}", stderr(&o));
    // A window named after the agent: its pane on top in its own clone.
    let clone = t.agents_dir().join(a).join("dev/rotorflight");
    let text = wait_pane(
        &tmux,
        &format!("work:{a}.0"),
        &format!("AGENT={a} AT={}", clone.display()),
    );
    assert!(!text.to_lowercase().contains("password"), "{text}");
    let panes = stdout(&tmux(&format!(
        "list-panes -t work:{a} -F '#{{pane_height}} #{{pane_current_path}}'"
    )));
    let panes: Vec<&str> = panes.lines().collect();
    assert_eq!(panes.len(), 2, "{panes:?}");
    assert!(
        panes[1].ends_with(&format!("/home/{h}/dev/rotorflight")),
        "the human's pane is in their checkout: {panes:?}"
    );
    let heights: Vec<u32> = panes
        .iter()
        .map(|p| p.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(heights[0] > 2 * heights[1], "75/25: {heights:?}");
}

/// Wait (bounded) until pane `target` shows `needle`; its text.
fn wait_pane(tmux: &dyn Fn(&str) -> Output, target: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = stdout(&tmux(&format!("capture-pane -p -J -t '{target}'")));
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "pane {target} never showed {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
