//! `nuketown portal` against a real tmux server: the agent's pane runs as the
//! agent in its clone, the human's pane below in theirs, and hostile directory
//! names neither break nor inject. Needs root (CI runs as root).

mod fixture;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fixture::{stderr, stdout, TestTown};

/// A directory name with spaces, quotes, `$()` and `;`.
const HOSTILE: &str = "it's a \"$(touch pwned)\"; echo PWNED; x";

/// Nothing was injected: no `pwned` file anywhere the panes ran, no PWNED line.
fn assert_not_injected(dirs: &[&Path], panes: &[&str]) {
    for d in dirs {
        assert!(
            !d.join("pwned").exists(),
            "a directory name ran a command in {}",
            d.display()
        );
    }
    for text in panes {
        assert!(
            !text.lines().any(|l| l.trim() == "PWNED"),
            "a directory name ran a command:\n{text}"
        );
    }
}

struct Tmux<'a> {
    t: &'a TestTown,
}

impl Tmux<'_> {
    fn env(&self, c: &mut Command) {
        c.env("TMUX_TMPDIR", self.t.path("tmux")).env_remove("TMUX");
    }
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new("tmux");
        c.args(args);
        self.env(&mut c);
        c.output().unwrap()
    }
    /// Wait (bounded) until the pane shows `needle`; returns the pane text.
    fn wait_for(&self, pane: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = stdout(&self.run(&["capture-pane", "-p", "-J", "-t", pane]));
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "pane {pane} never showed {needle:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn setup(t: &TestTown, human: &str, agent: &str, uid: u32) -> String {
    let town = t.write(
        "town.toml",
        &format!(
            "{}projectDirs = [\"~/dev\"]\n[agents.{agent}]\nuid = {uid}\nportal.layout = \"70/30\"\nportal.command = \"echo AGENT=$(whoami) AT=$(pwd); exec sleep 600\"\n",
            t.header(human)
        ),
    );
    let town = town.to_str().unwrap().to_string();
    t.ok(&["apply", &town]);
    fs::create_dir_all(t.path("tmux")).unwrap();
    // The agent's own clone and the human's checkout of the same project.
    let mk = format!(
        "mkdir -p ~/dev/{q}/.git ~/dev/plain/.git",
        q = nuketown_host::portal::sh_quote(HOSTILE)
    );
    for user in [agent, human] {
        let o = fixture::as_user(user, &mk);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    town
}

fn panes(tmux: &Tmux, window: &str) -> Vec<(String, u32)> {
    let out = stdout(&tmux.run(&[
        "list-panes",
        "-t",
        window,
        "-F",
        "#{pane_id} #{pane_top} #{pane_height}",
    ]));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn portal_puts_the_agent_on_top_and_the_human_below_in_one_project() {
    let t = TestTown::new(&["nkhoh", "nkhoada"], &[]);
    let town = setup(&t, "nkhoh", "nkhoada", 1947);
    let tmux = Tmux { t: &t };
    let mut c = t.cmd(&[
        "portal",
        "nkhoada",
        HOSTILE,
        "--detach",
        "--session",
        "nkt",
        "--town",
        &town,
    ]);
    tmux.env(&mut c);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let panes = panes(&tmux, "nkt:nkhoada");
    assert_eq!(panes.len(), 2, "{panes:?}");
    let (top, top_h) = &panes[0];
    let (bottom, bottom_h) = &panes[1];
    assert!(top_h > bottom_h, "agent pane larger (70/30): {panes:?}");

    let agent_dir = t.agents_dir().join("nkhoada/dev").join(HOSTILE);
    let top_text = tmux.wait_for(top, "AGENT=nkhoada");
    let seen = top_text.clone();
    assert!(
        seen.contains(&format!("AGENT=nkhoada AT={}", agent_dir.display())),
        "{seen}"
    );

    let r = tmux.run(&[
        "send-keys",
        "-t",
        bottom,
        "echo HUMAN=$(whoami) AT=\"$(pwd)\"",
        "Enter",
    ]);
    assert!(r.status.success());
    let seen = tmux.wait_for(bottom, "HUMAN=nkhoh AT=");
    assert!(
        seen.contains(&format!("HUMAN=nkhoh AT=/home/nkhoh/dev/{HOSTILE}")),
        "{seen}"
    );

    let human_dir = Path::new("/home/nkhoh/dev").join(HOSTILE);
    let agent_home = t.agents_dir().join("nkhoada");
    assert_not_injected(
        &[
            &agent_dir,
            &human_dir,
            &agent_home,
            Path::new("/home/nkhoh"),
        ],
        &[&top_text, &seen],
    );
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", "nkhoh"])
        .output();
}

#[test]
fn portal_without_arguments_picks_agent_then_project() {
    let t = TestTown::new(&["nkhqh", "nkhqada"], &[]);
    let town = setup(&t, "nkhqh", "nkhqada", 1948);
    let tmux = Tmux { t: &t };
    let mut c = t.cmd(&[
        "portal",
        "--detach",
        "--no-fzf",
        "--session",
        "nkq",
        "--town",
        &town,
    ]);
    tmux.env(&mut c);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Agent 1 (the only one); projects: (home), the hostile one, plain — sorted.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1\nplain\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let menu = stderr(&out);
    assert!(menu.contains("  1) nkhqada"), "{menu}");
    assert!(
        menu.contains("  1) (home)")
            && menu.contains(&format!(") {HOSTILE}"))
            && menu.contains(") plain"),
        "{menu}"
    );
    let panes = panes(&tmux, "nkq:nkhqada");
    let seen = tmux.wait_for(&panes[0].0, "AGENT=nkhqada");
    assert!(
        seen.contains(&format!(
            "AT={}/nkhqada/dev/plain",
            t.agents_dir().display()
        )),
        "{seen}"
    );
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", "nkhqh"])
        .output();
}

#[test]
fn unknown_agent_or_escaping_project_is_refused() {
    let t = TestTown::new(&["nkhuh", "nkhuada"], &[]);
    let town = setup(&t, "nkhuh", "nkhuada", 1949);
    let tmux = Tmux { t: &t };
    let mut c = t.cmd(&["portal", "nobody", "--detach", "--town", &town]);
    tmux.env(&mut c);
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nobody is not an enabled agent of this town"),
        "{}",
        stderr(&out)
    );
    let mut c = t.cmd(&[
        "portal",
        "nkhuada",
        "../../etc",
        "--detach",
        "--town",
        &town,
    ]);
    tmux.env(&mut c);
    let out = c.output().unwrap();
    assert!(
        stderr(&out).contains("must be a name under a project dir"),
        "{}",
        stderr(&out)
    );
}

/// A sudoers drop-in in the real /etc/sudoers.d (so real sudo reads it),
/// removed when the test ends, pass or fail.
struct RealSudoers(&'static str);

impl Drop for RealSudoers {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

/// Run `script` as `user` with a shell; the output.
fn as_human(user: &str, script: &str) -> Output {
    fixture::as_user(user, script)
}

#[test]
fn portal_run_by_the_human_opens_the_agents_clone_through_the_granted_sudo() {
    let (h, a) = ("nkpoh", "nkpoada");
    let t = TestTown::new(&[h, a], &[]);
    let sudoers = RealSudoers("/etc/sudoers.d/nkpo-portal-test");
    let write_town = |grant: bool| {
        let town = t.write(
            "town.toml",
            &format!(
                "{}projectDirs = [\"~/dev\"]\nhumanAsAgents = {grant}\n[agents.{a}]\nuid = 1963\nportal.command = \"echo AGENT=$(whoami) AT=$(pwd); exec sleep 600\"\n",
                t.header(h)
            ),
        );
        town.to_str().unwrap().to_string()
    };
    let apply = |town: &str| {
        let out = t
            .cmd(&["apply", town])
            .env("NUKETOWN_SUDOERS", sudoers.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    };
    let town = write_town(true);
    apply(&town);

    // The grant: the human may run commands as the agent — never as root.
    let text = fs::read_to_string(sudoers.0).unwrap();
    assert!(text.contains(&format!("Defaults>{a} use_pty\n")), "{text}");
    assert!(
        text.contains(&format!("{h} ALL = ({a}) NOPASSWD: ALL")),
        "{text}"
    );
    let listed = stdout(&Command::new("sudo").args(["-l", "-U", h]).output().unwrap());
    assert!(listed.contains(&format!("({a}) NOPASSWD: ALL")), "{listed}");
    assert!(
        !listed.contains("(root)") && !listed.contains("(ALL"),
        "{listed}"
    );
    let o = as_human(h, &format!("sudo -n -u {a} -- whoami"));
    assert_eq!(stdout(&o).trim(), a, "{}", stderr(&o));
    let o = as_human(h, "sudo -n -u root -- whoami");
    assert!(!o.status.success(), "the human became root: {}", stdout(&o));
    let o = as_human(h, &format!("sudo -n -u {a} -g root -- id -gn"));
    assert!(
        !o.status.success(),
        "the human chose group root: {}",
        stdout(&o)
    );

    // ada's own clone (her home is 0700: the human cannot see it) and the human's.
    for user in [a, h] {
        let o = fixture::as_user(user, "mkdir -p ~/dev/demo/.git");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(
        !as_human(h, &format!("ls {}/{a}", t.agents_dir().display()))
            .status
            .success()
    );
    let tmux_dir = t.path("tmux-human");
    fs::create_dir(&tmux_dir).unwrap();
    let o = Command::new("chown")
        .arg(h)
        .arg(&tmux_dir)
        .output()
        .unwrap();
    assert!(o.status.success());
    let bin = env!("CARGO_BIN_EXE_nuketown");
    let tmux = |args: &str| {
        as_human(
            h,
            &format!("TMUX_TMPDIR={} tmux {args}", tmux_dir.display()),
        )
    };
    let open = |town: &str| {
        as_human(
            h,
            &format!(
                "unset TMUX; TMUX_TMPDIR={} {bin} portal {a} demo --detach --session nkpo --town {town}",
                tmux_dir.display()
            ),
        )
    };
    let out = open(&town);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let agent_dir = t.agents_dir().join(a).join("dev/demo");
    assert!(
        stdout(&out).contains(&format!("portal to {a}: {} (agent)", agent_dir.display())),
        "{}",
        stdout(&out)
    );
    let panes = stdout(&tmux(&format!("list-panes -t nkpo:{a} -F '#{{pane_id}}'")));
    let panes: Vec<&str> = panes.lines().collect();
    assert_eq!(panes.len(), 2, "{panes:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = format!("AGENT={a} AT={}", agent_dir.display());
    loop {
        let text = stdout(&tmux(&format!("capture-pane -p -J -t '{}'", panes[0])));
        if text.contains(&want) {
            break;
        }
        assert!(
            !text.to_lowercase().contains("password"),
            "the agent pane asks for a password:\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "agent pane never showed {want:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = tmux("kill-server");

    // Without the grant the portal says why, before opening anything.
    let town = write_town(false);
    apply(&town);
    assert!(
        !Path::new(sudoers.0).exists(),
        "the grant outlived humanAsAgents = false"
    );
    let out = open(&town);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{h} may not act as {a} without a password")),
        "{}",
        stderr(&out)
    );
    assert!(
        !tmux("has-session -t nkpo").status.success(),
        "a window was opened"
    );
    let _ = Command::new("pkill").args(["-KILL", "-u", h]).output();
}
