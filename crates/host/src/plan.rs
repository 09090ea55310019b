//! Comparing a town with the host: the list of changes apply would make.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nuketown_town::{Agent, Signing, Town};

use crate::change::{Change, Source};
use crate::render;
use crate::state::{ManagedAgent, State};
use crate::system;
use crate::{HostError, HostPaths};

/// Groups an agent must never be in: membership would give root without a human.
pub const PRIVILEGED_GROUPS: &[&str] = &["sudo", "wheel", "admin", "adm", "root"];

/// The group whose members may approve escalations.
pub const APPROVERS_GROUP: &str = "nuketown-approvers";

/// Where an agent's generated SSH key lives, inside its persist root.
pub const GENERATED_KEY: &str = ".nuketown/ssh/id_ed25519";

/// The privilege path, rendered by the town hall: apply installs it when any
/// agent has `sudo.enable`, and removes the sudoers drop-in when none has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileged {
    /// The sudoers drop-in text.
    pub sudoers: String,
    /// The `sudo` shim script.
    pub shim: String,
    /// The built entry point binary to install at `hall.elevatePath`.
    pub elevate_binary: Option<PathBuf>,
}

/// A systemd unit apply installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// File name, e.g. `nuketown-reset.service`.
    pub name: String,
    /// Its text.
    pub text: String,
    /// Target that wants it (enabled with a `.wants/` link), if any.
    pub wanted_by: Option<String>,
    /// For a template (`name@.service`): the instances to enable.
    pub instances: Vec<String>,
}

/// How apply may change the host.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The running nuketown binary, installed where the units expect it.
    pub binary: Option<PathBuf>,
    /// System units to install and enable.
    pub units: Vec<Unit>,
    /// Remove agents that are no longer in the town.
    pub prune: bool,
    /// With `prune`, delete their persist dirs too.
    pub purge: bool,
    /// The privilege path to install.
    pub privileged: Option<Privileged>,
}

/// What apply would do: the changes, and things worth knowing that it won't change.
#[derive(Debug, Default)]
pub struct Plan {
    /// Changes, in the order apply makes them.
    pub changes: Vec<Change>,
    /// Notes for the user (left alone, skipped, needs a flag).
    pub notes: Vec<String>,
}

struct Planner {
    /// home-manager lays down this agent's dotfiles (NixOS): leave them to it.
    home_manager: bool,
    plan: Plan,
    /// Directories this plan already creates or fixes.
    made: BTreeSet<PathBuf>,
}

/// The shim directory: `bin/` beside the entry point.
pub fn shim_dir(town: &Town) -> PathBuf {
    town.hall
        .elevate_path
        .parent()
        .unwrap_or(Path::new("/"))
        .join("bin")
}

/// Compute what apply would change. Reads the host; changes nothing.
pub fn plan(town: &Town, paths: &HostPaths, opts: &Options) -> Result<Plan, HostError> {
    let mut p = Planner {
        home_manager: false,
        plan: Plan::default(),
        made: BTreeSet::new(),
    };
    let state = State::load(&paths.state_dir)?;
    let mut new_state = state.clone();

    if !town.enable {
        p.plan
            .notes
            .push("the town has enable = false: nothing is applied".into());
        return Ok(p.plan);
    }

    // The human(s) first: they must exist to join the approvers group.
    p.group(crate::plan::APPROVERS_GROUP, None, true);
    if let Some(human) = &town.human_user {
        if system::user(human).is_none() {
            p.push(Change::CreateUser {
                name: human.clone(),
                uid: None,
                gid: None,
                home: PathBuf::from("/home").join(human),
                shell: "/bin/bash".into(),
                comment: town.human_name.clone().unwrap_or_default(),
                create_home: true,
            });
        }
    }
    for who in town.approvers() {
        let human_planned = town.human_user.as_deref() == Some(who.as_str());
        if system::user(&who).is_none() && !human_planned {
            p.plan.notes.push(format!(
                "approver {who} has no account on this host; create it to let them approve"
            ));
            continue;
        }
        if !system::groups_of(&who).iter().any(|g| g == APPROVERS_GROUP) {
            p.push(Change::AddToGroup {
                user: who.clone(),
                group: APPROVERS_GROUP.into(),
            });
        }
    }

    for top in [&town.agents_dir, &town.persist_dir] {
        if let Some(parent) = top.parent() {
            p.dir_chain(parent, 0o755, 0, 0);
        }
    }
    p.dir(&town.agents_dir, 0o755, 0, 0, true);
    p.dir(&town.persist_dir, 0o755, 0, 0, false);
    let trash = crate::round::trash_dir(&town.agents_dir);
    if fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some()) {
        p.push(Change::EmptyTrash {
            agents_dir: town.agents_dir.clone(),
        });
    }
    p.dir(&town.persist_dir.join("agents"), 0o755, 0, 0, true);

    for (name, agent) in town.enabled_agents() {
        p.agent(town, name, agent, &state)?;
        new_state.agents.insert(
            name.clone(),
            ManagedAgent {
                uid: agent.uid,
                home: town.home_of(name),
                persist: town.persist_of(name),
            },
        );
    }

    // Devices.
    let rules = render::udev_rules(town, render::SETFACL);
    if let Some(dir) = paths.udev_rules.parent() {
        p.dir(dir, 0o755, 0, 0, false);
    }
    if p.file(&paths.udev_rules, Source::Text(rules), 0o644, 0, 0) {
        p.push(Change::ReloadUdev);
    }
    // Devices plugged in now get their ACL at once, as the rule would on plug-in.
    for d in crate::devices::devices(town) {
        let perm = &town.agents[&d.agent].devices[d.index].permission;
        for node in d.present.iter().filter(|n| !n.acl) {
            if let Some(dev) = node.devnode.as_ref().filter(|d| d.exists()) {
                p.push(Change::DeviceAcl {
                    agent: d.agent.clone(),
                    node: dev.clone(),
                    argv: render::acl_command(render::SETFACL, &d.agent, perm, dev),
                });
            }
        }
    }

    // The privilege path.
    let any_sudo = town.enabled_agents().any(|(_, a)| a.sudo.enable);
    match (&opts.privileged, any_sudo) {
        (Some(pr), true) => {
            let dir = town.hall.elevate_path.parent().unwrap_or(Path::new("/"));
            p.dir_chain(dir, 0o755, 0, 0);
            match &pr.elevate_binary {
                Some(bin) => {
                    p.file(&town.hall.elevate_path, Source::CopyOf(bin.clone()), 0o755, 0, 0);
                }
                None if town.hall.elevate_path.exists() => {}
                None => p.plan.notes.push(format!(
                    "the entry point nuketown-elevate was not found next to this nuketown binary; install it at {} or sudo requests will fail",
                    town.hall.elevate_path.display()
                )),
            }
            let shim = shim_dir(town);
            p.dir(&shim, 0o755, 0, 0, true);
            p.file(
                &shim.join("sudo"),
                Source::Text(pr.shim.clone()),
                0o755,
                0,
                0,
            );
            if current(&paths.sudoers).as_deref() != Some(pr.sudoers.as_bytes())
                || !mode_is(&paths.sudoers, 0o440, 0, 0)
            {
                p.push(Change::Sudoers {
                    path: paths.sudoers.clone(),
                    text: pr.sudoers.clone(),
                });
            }
        }
        (_, false) if paths.sudoers.exists() => p.push(Change::RemoveFile {
            path: paths.sudoers.clone(),
        }),
        (None, true) => p.plan.notes.push(
            "sudo is enabled for some agents but this build cannot render the sudoers drop-in"
                .into(),
        ),
        _ => {}
    }

    // The binary the units run, and the units.
    if let Some(bin) = &opts.binary {
        let installed = paths.installed_binary(bin);
        if &installed != bin {
            p.dir_chain(&paths.bin_dir, 0o755, 0, 0);
            p.file(&installed, Source::CopyOf(bin.clone()), 0o755, 0, 0);
        }
    }
    if !opts.units.is_empty() && paths.systemd_dir.parent().is_some_and(|d| d.is_dir()) {
        p.dir(&paths.systemd_dir, 0o755, 0, 0, false);
        let mut changed = false;
        for unit in &opts.units {
            changed |= p.file(
                &paths.systemd_dir.join(&unit.name),
                Source::Text(unit.text.clone()),
                0o644,
                0,
                0,
            );
            if let Some(target) = &unit.wanted_by {
                let wants = paths.systemd_dir.join(format!("{target}.wants"));
                p.dir(&wants, 0o755, 0, 0, false);
                let links: Vec<String> = if unit.name.contains("@.") {
                    unit.instances
                        .iter()
                        .map(|i| unit.name.replacen("@.", &format!("@{i}."), 1))
                        .collect()
                } else if unit.instances.is_empty() {
                    vec![unit.name.clone()]
                } else {
                    unit.instances
                        .iter()
                        .map(|i| unit.name.replacen("@.", &format!("@{i}."), 1))
                        .collect()
                };
                let want = PathBuf::from("..").join(&unit.name);
                for l in links {
                    let link = wants.join(&l);
                    if fs::read_link(&link).ok().as_ref() != Some(&want) {
                        p.push(Change::Symlink {
                            link,
                            target: want.clone(),
                        });
                        changed = true;
                    }
                }
            }
        }
        if changed && Path::new("/run/systemd/system").is_dir() {
            p.push(Change::DaemonReload);
        }
    }

    // Publish the town for the other binaries (the hall reads its policies here).
    p.dir(&paths.etc_dir, 0o755, 0, 0, false);
    let town_json = serde_json::to_string_pretty(town).expect("town serialises") + "\n";
    p.file(
        &paths.etc_dir.join("town.json"),
        Source::Text(town_json),
        0o644,
        0,
        0,
    );

    // Agents no longer in the town.
    for (name, managed) in &state.agents {
        if town.agents.get(name).is_some_and(|a| a.enable) {
            continue;
        }
        if opts.prune {
            if system::user(name).is_some_and(|a| a.uid == managed.uid) {
                p.push(Change::RemoveUser {
                    name: name.clone(),
                    home: managed.home.clone(),
                });
            } else if managed.home.exists() {
                p.push(Change::RemoveTree {
                    path: managed.home.clone(),
                });
            }
            if opts.purge && managed.persist.exists() {
                p.push(Change::RemoveTree {
                    path: managed.persist.clone(),
                });
            }
            new_state.agents.remove(name);
        } else {
            p.plan.notes.push(format!(
                "agent {name} (uid {}) is no longer in the town; `apply --prune` removes its user and home (its persist dir {} is kept unless --purge)",
                managed.uid,
                managed.persist.display()
            ));
        }
    }
    if new_state != state {
        p.push(Change::SaveState {
            path: State::path(&paths.state_dir),
            text: new_state.to_text(),
        });
    }
    Ok(p.plan)
}

/// Whether home-manager (the NixOS module) lays down `name`'s dotfiles.
pub fn home_manager_manages(name: &str) -> bool {
    Path::new("/etc/systemd/system")
        .join(format!("home-manager-{name}.service"))
        .exists()
}

/// The changes that lay down one agent (user, home, persist binds, keys,
/// identity files) and nothing else: what a new round re-applies.
pub fn plan_agent(town: &Town, name: &str, paths: &HostPaths) -> Result<Plan, HostError> {
    let mut p = Planner {
        home_manager: home_manager_manages(name),
        plan: Plan::default(),
        made: BTreeSet::new(),
    };
    let state = State::load(&paths.state_dir)?;
    let agent = town
        .agents
        .get(name)
        .ok_or_else(|| HostError::Conflict(format!("{name} is not an agent of this town")))?;
    p.dir(&town.agents_dir, 0o755, 0, 0, true);
    p.dir_chain(&town.persist_dir.join("agents"), 0o755, 0, 0);
    p.agent(town, name, agent, &state)?;
    Ok(p.plan)
}

fn current(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}

fn mode_is(path: &Path, mode: u32, uid: u32, gid: u32) -> bool {
    system::owner_mode(path) == Some((mode, uid, gid))
}

impl Planner {
    fn push(&mut self, c: Change) {
        self.plan.changes.push(c);
    }

    fn group(&mut self, name: &str, gid: Option<u32>, system_group: bool) {
        if system::group(name).is_none()
            && !self
                .plan
                .changes
                .iter()
                .any(|c| matches!(c, Change::CreateGroup { name: n, .. } if n == name))
        {
            self.push(Change::CreateGroup {
                name: name.into(),
                gid,
                system: system_group,
            });
        }
    }

    /// Ensure a directory; `strict` also fixes mode and owner of an existing one.
    fn dir(&mut self, path: &Path, mode: u32, uid: u32, gid: u32, strict: bool) {
        if self.made.contains(path) {
            return; // already planned
        }
        let exists = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if !exists || (strict && !mode_is(path, mode, uid, gid)) {
            self.made.insert(path.to_path_buf());
            self.push(Change::Dir {
                path: path.to_path_buf(),
                mode,
                uid,
                gid,
            });
        }
    }

    /// Ensure `dir` and its missing ancestors.
    fn dir_chain(&mut self, dir: &Path, mode: u32, uid: u32, gid: u32) {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| !a.exists())
            .map(Path::to_path_buf)
            .collect();
        for d in missing.into_iter().rev() {
            self.dir(&d, mode, uid, gid, false);
        }
    }

    /// Ensure the directories from `root` (exclusive) down to `path`'s parent.
    fn parents_within(&mut self, root: &Path, path: &Path, mode: u32, uid: u32, gid: u32) {
        if let Ok(rel) = path.strip_prefix(root) {
            let mut at = root.to_path_buf();
            let comps: Vec<_> = rel.components().collect();
            for c in &comps[..comps.len().saturating_sub(1)] {
                at.push(c);
                self.dir(&at.clone(), mode, uid, gid, false);
            }
        }
    }

    /// Ensure a file's contents, mode and owner; true if a change is planned.
    fn file(&mut self, path: &Path, source: Source, mode: u32, uid: u32, gid: u32) -> bool {
        let same = match (current(path), source.bytes()) {
            (Some(have), Ok(want)) => have == want,
            _ => false,
        } && mode_is(path, mode, uid, gid);
        if !same {
            self.push(Change::File {
                path: path.to_path_buf(),
                source,
                mode,
                uid,
                gid,
            });
        }
        !same
    }

    fn agent(
        &mut self,
        town: &Town,
        name: &str,
        agent: &Agent,
        state: &State,
    ) -> Result<(), HostError> {
        let home = town.home_of(name);
        let persist = town.persist_of(name);
        let uid = agent.uid;

        // Private group, then user.
        let gid = match system::group(name) {
            Some((g, _)) => g,
            None => {
                if let Some(other) = system::group_name(uid) {
                    return Err(HostError::Conflict(format!(
                        "agents.{name}.uid: gid {uid} for {name}'s private group belongs to the existing group {other}; pick another uid or remove that group"
                    )));
                }
                self.group(name, Some(uid), false);
                uid
            }
        };
        match system::user(name) {
            None => {
                if let Some(other) = system::user_by_uid(uid) {
                    return Err(HostError::Conflict(format!(
                        "agents.{name}.uid: uid {uid} belongs to the existing user {}; pick a free uid",
                        other.name
                    )));
                }
                self.push(Change::CreateUser {
                    name: name.into(),
                    uid: Some(uid),
                    gid: Some(gid),
                    home: home.clone(),
                    shell: "/bin/bash".into(),
                    comment: format!("nuketown agent ({})", agent.role),
                    create_home: false,
                });
            }
            Some(acct) => {
                if acct.uid != uid {
                    return Err(HostError::Conflict(format!(
                        "agents.{name}.uid: the existing user {name} has uid {}, the town says {uid}; set agents.{name}.uid = {} or remove the user",
                        acct.uid, acct.uid
                    )));
                }
                if !state.agents.contains_key(name) && acct.home != home {
                    return Err(HostError::Conflict(format!(
                        "agents.{name}: a user {name} already exists (home {}) and nuketown did not create it; rename the agent or remove that user",
                        acct.home.display()
                    )));
                }
                let mut args = Vec::new();
                let mut what = Vec::new();
                if acct.home != home {
                    args.extend(["-d".to_string(), home.display().to_string()]);
                    what.push(format!(
                        "home {} -> {}",
                        acct.home.display(),
                        home.display()
                    ));
                }
                if acct.shell != Path::new("/bin/bash") {
                    args.extend(["-s".to_string(), "/bin/bash".to_string()]);
                    what.push("shell -> /bin/bash".to_string());
                }
                if acct.gid != gid {
                    args.extend(["-g".to_string(), gid.to_string()]);
                    what.push(format!("primary group -> {name}"));
                }
                if !args.is_empty() {
                    self.push(Change::ModifyUser {
                        name: name.into(),
                        what: what.join(", "),
                        args,
                    });
                }
            }
        }
        let groups = system::groups_of(name);
        for g in groups
            .iter()
            .filter(|g| PRIVILEGED_GROUPS.contains(&g.as_str()))
        {
            self.push(Change::RemoveFromGroup {
                user: name.into(),
                group: g.clone(),
            });
        }
        let device_groups: BTreeSet<&str> =
            agent.devices.iter().map(|d| d.group.as_str()).collect();
        for g in device_groups {
            if PRIVILEGED_GROUPS.contains(&g) {
                return Err(HostError::Conflict(format!(
                    "agents.{name}.devices: group {g} would give {name} root without a human; use a device group such as plugdev or dialout"
                )));
            }
            self.group(g, None, true);
            if !groups.iter().any(|x| x == g) {
                self.push(Change::AddToGroup {
                    user: name.into(),
                    group: g.into(),
                });
            }
        }

        // Home and persist root.
        if fs::symlink_metadata(&home).is_err() {
            let subvolume = crate::round::on_btrfs(&town.agents_dir);
            self.made.insert(home.clone());
            self.push(Change::Home {
                path: home.clone(),
                uid,
                gid,
                subvolume,
            });
        } else {
            self.dir(&home, 0o700, uid, gid, true);
        }
        self.dir(&persist, 0o700, uid, gid, true);
        let mounts = system::mount_points();
        let persisted = agent
            .persist
            .directories
            .iter()
            .map(|d| (d, true))
            .chain(agent.persist.files.iter().map(|f| (f, false)));
        for (rel, is_dir) in persisted {
            let src = persist.join(rel);
            let dst = home.join(rel);
            self.parents_within(&persist, &src, 0o700, uid, gid);
            self.parents_within(&home, &dst, 0o755, uid, gid);
            if is_dir {
                self.dir(&src, 0o700, uid, gid, false);
                self.dir(&dst, 0o700, uid, gid, false);
            } else {
                if fs::symlink_metadata(&src).is_err() {
                    self.push(Change::Touch {
                        path: src.clone(),
                        mode: 0o600,
                        uid,
                        gid,
                    });
                }
                if fs::symlink_metadata(&dst).is_err() {
                    self.push(Change::Touch {
                        path: dst.clone(),
                        mode: 0o600,
                        uid,
                        gid,
                    });
                }
            }
            if !mounts.contains(&dst) {
                self.push(Change::Bind {
                    source: src,
                    target: dst,
                });
            }
        }

        // Keys.
        let key = match &agent.secrets.ssh_key {
            Some(k) => {
                if !k.exists() {
                    return Err(HostError::Conflict(format!(
                        "agents.{name}.secrets.sshKey: {} does not exist; point it at the agent's private key or remove the key to have one generated",
                        k.display()
                    )));
                }
                k.clone()
            }
            None => {
                let k = persist.join(GENERATED_KEY);
                if !k.exists() {
                    self.parents_within(&persist, &k, 0o700, uid, gid);
                    self.push(Change::GenerateSshKey {
                        path: k.clone(),
                        comment: format!("{name}@{}", town.domain()),
                        uid,
                        gid,
                    });
                }
                k
            }
        };
        let ssh = home.join(".ssh");
        self.dir(&ssh, 0o700, uid, gid, true);
        self.file(
            &ssh.join("id_ed25519"),
            Source::CopyOf(key.clone()),
            0o600,
            uid,
            gid,
        );
        self.file(
            &ssh.join("id_ed25519.pub"),
            Source::PublicKeyOf(key.clone()),
            0o644,
            uid,
            gid,
        );
        let identity = town.identity(name);
        let signing = match &agent.secrets.gpg_key {
            Some(gpg) => {
                let fpr = gpg_fingerprint(gpg).map_err(|e| {
                    HostError::Conflict(format!(
                        "agents.{name}.secrets.gpgKey: {}: {e}",
                        gpg.display()
                    ))
                })?;
                self.dir(&home.join(".gnupg"), 0o700, uid, gid, true);
                if !gpg_has_secret_key(name, &fpr) {
                    self.push(Change::ImportGpgKey {
                        user: name.into(),
                        key: gpg.clone(),
                    });
                }
                Signing::Gpg(fpr)
            }
            None => Signing::Ssh(".ssh/id_ed25519.pub".into()),
        };
        let git_dir = home.join(".config/git");
        self.parents_within(&home, &git_dir.join("x"), 0o755, uid, gid);
        self.file(
            &git_dir.join("allowed_signers"),
            Source::AllowedSigner {
                email: identity.email.clone(),
                key: key.clone(),
            },
            0o644,
            uid,
            gid,
        );
        if self.home_manager {
            // NixOS: home-manager's activation (restarted by reset) writes the rest.
            return Ok(());
        }
        self.file(
            &home.join(".gitconfig"),
            Source::Text(identity.gitconfig(Some(&signing))),
            0o644,
            uid,
            gid,
        );

        // Identity projections and shell start-up.
        for proj in town.projections(name) {
            let path = home.join(&proj.path);
            self.parents_within(&home, &path, 0o755, uid, gid);
            self.file(&path, Source::Text(proj.contents), proj.mode, uid, gid);
        }
        let shim = agent.sudo.enable.then(|| shim_dir(town));
        self.file(
            &home.join(".profile"),
            Source::Text(render::profile()),
            0o644,
            uid,
            gid,
        );
        self.file(
            &home.join(".bashrc"),
            Source::Text(render::bashrc(name, shim.as_deref())),
            0o644,
            uid,
            gid,
        );

        for (sname, secret) in &agent.secrets.extra_secrets {
            let dst = home.join(&secret.path);
            match &secret.source {
                Some(src) if src.exists() => {
                    self.parents_within(&home, &dst, 0o700, uid, gid);
                    let mode = u32::from_str_radix(&secret.mode, 8).unwrap_or(0o400);
                    self.file(&dst, Source::CopyOf(src.clone()), mode, uid, gid);
                }
                Some(src) => {
                    return Err(HostError::Conflict(format!(
                        "agents.{name}.secrets.extraSecrets.{sname}.source: {} does not exist",
                        src.display()
                    )))
                }
                None => self.plan.notes.push(format!(
                    "agents.{name}.secrets.extraSecrets.{sname} has no source on this host; skipped (on NixOS, sops-nix provides it)"
                )),
            }
        }
        Ok(())
    }
}

/// The fingerprint of the (first) key in an armored key file, read without a keyring.
pub fn gpg_fingerprint(file: &Path) -> Result<String, String> {
    let tmp = std::env::temp_dir().join(format!("nuketown-gpg-{}", std::process::id()));
    let _ = fs::create_dir_all(&tmp);
    let _ = fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let out = Command::new("gpg")
        .env("GNUPGHOME", &tmp)
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(file)
        .output();
    let _ = fs::remove_dir_all(&tmp);
    let out = out.map_err(|e| format!("cannot run gpg: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "not a GPG key file: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .map(str::to_string)
        .ok_or_else(|| "no key found in the file".to_string())
}

fn gpg_has_secret_key(user: &str, fpr: &str) -> bool {
    if system::user(user).is_none() {
        return false;
    }
    let mut c = system::as_user(user, "gpg");
    c.args(["--batch", "--list-secret-keys", fpr]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c.status().is_ok_and(|s| s.success())
}
