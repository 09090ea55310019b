//! Comparing a town with the host: the list of changes apply would make.
//!
//! One [`Planner`] collects the changes; each concern is a step of its own:
//! the humans and the hall, then per agent its account, home and persisted
//! paths, keys, identity files and secrets, then devices, the privilege
//! path, units and what left the town. [`plan_agent`] is the per-agent part
//! alone: what a new round lays down. Every read inside an agent's tree goes
//! through [`crate::safe`], like every write.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use nuketown_town::{Agent, Signing, Town};

use crate::change::{At, Change, Origin, Source};
use crate::render;
use crate::safe::{Kind, Meta, Tree};
use crate::state::{ManagedAgent, State};
use crate::system;
use crate::{HostError, HostPaths};

/// Groups an agent must never be in: membership would give root without a human.
pub const PRIVILEGED_GROUPS: &[&str] = &["sudo", "wheel", "admin", "adm", "root"];

/// The group whose members may approve escalations.
pub const APPROVERS_GROUP: &str = "nuketown-approvers";

/// Root's store of the SSH keys it generates for agents, inside
/// `persistDir/agents` (root's, 0755) but out of every agent's reach: the
/// agents cannot plant a link where root keeps their keys.
pub const KEY_STORE: &str = ".nuketown-keys";

/// Where keys were generated before the key store (inside the agent's
/// persist dir, the agent's): adopted into the store once.
pub const OLD_GENERATED_KEY: &str = ".nuketown/ssh/id_ed25519";

/// `persistDir/agents`: root's directory holding every agent's persist dir.
pub fn persist_agents(town: &Town) -> PathBuf {
    town.persist_dir.join("agents")
}

/// Where root keeps the SSH key it generated for agent `name`.
pub fn generated_key(town: &Town, name: &str) -> At {
    At::new(
        persist_agents(town),
        Path::new(KEY_STORE).join(name).join("id_ed25519"),
    )
}

/// The privilege path, rendered by the town hall: apply installs it when any
/// agent has `sudo.enable`, and removes the sudoers drop-in when none has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileged {
    /// The sudoers drop-in text.
    pub sudoers: String,
    /// The human's grant to act as the agents (`humanAsAgents`), appended
    /// to the drop-in; installed even when no agent has `sudo.enable`.
    pub human_grant: String,
    /// The compiled shim (`nuketown-sudo`) to install as `<shim dir>/sudo`.
    pub shim_binary: Option<PathBuf>,
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
    /// System units that are no longer wanted (`nuketown-rooms.service` when
    /// no room is declared): stopped, disabled and removed when present.
    pub retired_units: Vec<Unit>,
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
    /// What will go wrong later if left as it is (shown on stderr).
    pub warnings: Vec<String>,
}

struct Planner {
    /// home-manager lays down this agent's dotfiles (NixOS): leave them to it.
    home_manager: bool,
    /// Where sops secrets without a place in the home go (`/run/secrets`).
    secrets_dir: PathBuf,
    plan: Plan,
    /// Directories this plan already creates or fixes.
    made: BTreeSet<PathBuf>,
}

/// One agent being planned: who, and its two trees.
struct Ctx<'a> {
    name: &'a str,
    agent: &'a Agent,
    uid: u32,
    gid: u32,
    /// `agentsDir` + name.
    home: At,
    /// `persistDir/agents` + name.
    persist: At,
}

/// The shim directory: `bin/` beside the entry point.
pub fn shim_dir(town: &Town) -> PathBuf {
    town.hall.shim_dir()
}

/// Compute what apply would change. Reads the host; changes nothing.
pub fn plan(town: &Town, paths: &HostPaths, opts: &Options) -> Result<Plan, HostError> {
    let mut p = Planner {
        home_manager: false,
        secrets_dir: paths.secrets_dir.clone(),
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
    p.humans(town);
    p.gateway_user(town);
    p.town_dirs(town);
    // Before any agent exists: a restricted agent never runs unrestricted.
    p.network(town, paths)?;
    for (name, agent) in town.host_agents() {
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

    p.shared_dirs(town);
    p.departed_shared(town, &state, &mut new_state);
    p.reachable(town, paths);
    p.devices(town, paths);
    p.privileged(town, paths, opts);
    let chats = town.host_agents().any(|(_, a)| a.chat.enable);
    p.units(paths, opts, chats);
    p.publish(town, paths);
    p.trust(town, paths)?;
    p.portals(town, paths, opts);
    p.nix_only(town, paths);
    p.departed(town, opts, &state, &mut new_state);
    if new_state != state {
        p.push(Change::SaveState {
            path: State::path(&paths.state_dir),
            text: new_state.to_text(),
        });
    }
    Ok(p.plan)
}

/// The town-wide steps of [`plan`], one concern each.
impl Planner {
    /// The gateway's own system user, when an agent has credentials.
    fn gateway_user(&mut self, town: &Town) {
        let user = &town.hall.gateway.user;
        if town.has_credentials() && system::user(user).is_none() {
            self.push(Change::CreateSystemUser {
                name: user.clone(),
                comment: "nuketown credential gateway".into(),
            });
        }
    }

    /// The human(s) first: they must exist to join the approvers group.
    fn humans(&mut self, town: &Town) {
        self.group(crate::plan::APPROVERS_GROUP, None, true);
        if let Some(human) = &town.human_user {
            if system::user(human).is_none() {
                self.push(Change::CreateUser {
                    name: human.clone(),
                    uid: None,
                    gid: None,
                    home: PathBuf::from("/home").join(human),
                    shell: "/bin/bash".into(),
                    comment: town.human_name.clone().unwrap_or_default(),
                    create_home: true,
                    no_subordinate_ids: false,
                });
            }
        }
        for who in town.approvers() {
            let human_planned = town.human_user.as_deref() == Some(who.as_str());
            if system::user(&who).is_none() && !human_planned {
                self.plan.notes.push(format!(
                    "approver {who} has no account on this host; create it to let them approve"
                ));
                continue;
            }
            if !system::groups_of(&who).iter().any(|g| g == APPROVERS_GROUP) {
                self.push(Change::AddToGroup {
                    user: who.clone(),
                    group: APPROVERS_GROUP.into(),
                });
            }
        }
    }

    /// `agentsDir`, `persistDir` and `persistDir/agents`, and the trash.
    fn town_dirs(&mut self, town: &Town) {
        for top in [&town.agents_dir, &town.persist_dir] {
            if let Some(parent) = top.parent() {
                self.dir_chain(parent, 0o755, 0, 0);
            }
        }
        // The two directories that hold the agents' trees are root's: nothing
        // below them can be swapped by an agent except inside its own tree.
        self.dir(&At::system(&town.agents_dir), 0o755, 0, 0, true);
        self.dir(&At::system(&town.persist_dir), 0o755, 0, 0, false);
        let trash = crate::home::trash_dir(&town.agents_dir);
        if fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some()) {
            self.push(Change::EmptyTrash {
                agents_dir: town.agents_dir.clone(),
            });
        }
        self.dir(&At::system(&persist_agents(town)), 0o755, 0, 0, true);
    }

    /// Shared directories: a group each with exactly the declared members,
    /// the directory's ancestors, the directory itself (see [`crate::shared`]).
    fn shared_dirs(&mut self, town: &Town) {
        for name in town.shared_dirs.keys() {
            let group = Town::shared_group(name);
            let members = crate::shared::members(town, name);
            let gid = town.shared_dirs[name].gid;
            match (system::group(&group), gid) {
                (Some((have, _)), Some(want)) if have != want => self.plan.notes.push(format!(
                    "group {group} has gid {have}, not sharedDirs.{name}.gid {want}; apply leaves it (files inside record the gid): change it with groupmod and chgrp, or declare {have}"
                )),
                _ => {}
            }
            self.group(&group, gid, gid.is_none());
            let current = system::group(&group).map(|(_, m)| m).unwrap_or_default();
            for (who, _) in &members {
                if !current.contains(who) {
                    self.push(Change::AddToGroup {
                        user: who.clone(),
                        group: group.clone(),
                    });
                }
            }
            for who in &current {
                if !members.iter().any(|(m, _)| m == who) {
                    self.push(Change::RemoveFromGroup {
                        user: who.clone(),
                        group: group.clone(),
                    });
                }
            }
            let path = town.shared_path(name);
            if let Some(parent) = path.parent() {
                self.dir_chain(parent, 0o755, 0, 0);
            }
            let at = At::system(&path);
            // Agents' uids are declared; a human's is the host's (or not yet).
            let uids: Option<Vec<_>> = members
                .iter()
                .map(|(w, a)| {
                    let uid = match town.agents.get(w) {
                        Some(agent) => Some(agent.uid),
                        None => system::user(w).map(|u| u.uid),
                    };
                    uid.map(|u| (u, *a))
                })
                .collect();
            let found = match &uids {
                Some(uids) => crate::shared::inspect(&at, &group, uids),
                None => crate::shared::Found::Differs("a member has no account yet".into()),
            };
            if found != crate::shared::Found::AsDeclared {
                let new = matches!(meta(&at), Ok(None));
                self.push(Change::SharedDir {
                    at,
                    name: name.clone(),
                    group,
                    members,
                    new,
                });
            }
        }
    }

    /// Shared directories that left the town: closed to everyone but root
    /// (no member entries; the data and the group stay), and forgotten.
    fn departed_shared(&mut self, town: &Town, state: &State, new_state: &mut State) {
        for name in town.shared_dirs.keys() {
            new_state
                .shared
                .insert(name.clone(), town.shared_path(name));
        }
        for (name, path) in &state.shared {
            if town.shared_dirs.contains_key(name) {
                continue;
            }
            new_state.shared.remove(name);
            let at = At::system(path);
            if matches!(meta(&at), Ok(None)) {
                continue;
            }
            let group = Town::shared_group(name);
            if system::group(&group).is_some() {
                self.push(Change::SharedDir {
                    at,
                    name: name.clone(),
                    group,
                    members: Vec::new(),
                    new: false,
                });
            }
            self.plan.notes.push(format!(
                "sharedDirs.{name} left the town: {} is closed to all but root; its files and group shared-{name} stay (remove them yourself when done)",
                path.display()
            ));
        }
    }

    /// Warn when an agent could not reach a directory of the town (its home
    /// under `agentsDir`, its persist dir, the published town file the
    /// hall's clients and the chat bridge read, a shared directory) because
    /// a directory above it gives others no search permission: the agent's
    /// tools would fail later with "Permission denied", far from the cause.
    fn reachable(&mut self, town: &Town, paths: &HostPaths) {
        if town.host_agents().next().is_none() {
            return;
        }
        let mut targets: Vec<(String, PathBuf, bool)> = vec![
            ("agentsDir".into(), town.agents_dir.clone(), false),
            ("persistDir".into(), town.persist_dir.clone(), true),
            (
                "the town file".into(),
                paths.etc_dir.join("town.json"),
                false,
            ),
        ];
        for name in town.shared_dirs.keys() {
            targets.push((format!("sharedDirs.{name}"), town.shared_path(name), false));
        }
        for (what, path, itself) in targets {
            if let Some((dir, mode)) = unsearchable(&path, itself) {
                self.plan.warnings.push(format!(
                    "agents cannot reach {what} {}: {} is mode {mode:04o}, which gives others no search permission; run `chmod o+x {}` or move {what} elsewhere — else agents and their chat bridges fail with \"Permission denied\"",
                    path.display(),
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }

    /// udev rules, and ACLs for declared devices plugged in now.
    fn devices(&mut self, town: &Town, paths: &HostPaths) {
        let rules = render::udev_rules(town, render::SETFACL);
        if let Some(dir) = paths.udev_rules.parent() {
            self.dir(&At::system(dir), 0o755, 0, 0, false);
        }
        if self.file(
            &At::system(&paths.udev_rules),
            Source::Text(rules),
            0o644,
            0,
            0,
        ) {
            self.push(Change::ReloadUdev);
        }
        // Devices plugged in now get their ACL at once, as the rule would on plug-in.
        for d in crate::devices::devices(town) {
            let perm = &town.agents[&d.agent].devices[d.index].permission;
            for node in d.present.iter().filter(|n| !n.acl) {
                if let Some(dev) = node
                    .devnode
                    .as_ref()
                    .filter(|d| crate::devices::is_device_node(d))
                {
                    self.push(Change::DeviceAcl {
                        agent: d.agent.clone(),
                        node: dev.clone(),
                        argv: render::acl_command(render::SETFACL, &d.agent, perm, dev),
                    });
                }
            }
        }
    }

    /// The agents' egress rules (`network.egress`) in nftables, by uid.
    /// Host names are resolved now; one that does not resolve stops the
    /// plan before anything changes.
    fn network(&mut self, town: &Town, paths: &HostPaths) -> Result<(), HostError> {
        use std::net::ToSocketAddrs;
        let table = nuketown_town::network::table_from_env();
        let resolvers = nuketown_town::network::host_resolvers(&paths.resolv_conf);
        let text = nuketown_town::network::ruleset(
            town,
            &table,
            &|h| {
                (h, 0u16)
                    .to_socket_addrs()
                    .map(|a| a.map(|s| s.ip()).collect())
                    .map_err(|e| e.to_string())
            },
            &resolvers,
        )
        .map_err(|problems| {
            HostError::Conflict(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let path = paths.etc_dir.join("nftables.nft");
        let restricted = town
            .host_agents()
            .any(|(_, a)| a.network.egress.restricted());
        for (name, a) in town
            .host_agents()
            .filter(|(_, a)| a.network.egress.restricted())
        {
            let dns = nuketown_town::network::dns_servers(&a.network, &resolvers);
            let from = if a.network.dns.is_some() {
                format!("agents.{name}.network.dns")
            } else {
                format!(
                    "the host's {}; agents.{name}.network.dns overrides",
                    paths.resolv_conf.display()
                )
            };
            self.plan.notes.push(if dns.is_empty() {
                format!("{name} may ask no DNS server ({from} names none)")
            } else {
                format!(
                    "{name} may ask DNS only of {} (from {from})",
                    dns.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        let exists = || nuketown_town::network::table_exists(&table);
        if !restricted && !path.exists() && !exists() {
            // Nothing restricted, nothing installed: nftables is not needed at all.
            return Ok(());
        }
        let stale = current(&path).as_deref() != Some(text.as_bytes());
        if stale || restricted != exists() {
            self.push(Change::Nftables { path, text, table });
        }
        Ok(())
    }

    /// The privilege path: entry point, sudo shim, sudoers drop-in (which
    /// also holds the human's grant to act as the agents).
    fn privileged(&mut self, town: &Town, paths: &HostPaths, opts: &Options) {
        let any_sudo = town.host_agents().any(|(_, a)| a.sudo.enable);
        let grant = opts
            .privileged
            .as_ref()
            .is_some_and(|p| !p.human_grant.is_empty());
        if let (Some(pr), true) = (&opts.privileged, any_sudo) {
            let dir = town.hall.elevate_path.parent().unwrap_or(Path::new("/"));
            self.dir_chain(dir, 0o755, 0, 0);
            match &pr.elevate_binary {
                Some(bin) => {
                    self.file(
                        &At::system(&town.hall.elevate_path),
                        Source::CopyOf(Origin::Trusted(bin.clone())),
                        0o755,
                        0,
                        0,
                    );
                }
                None if town.hall.elevate_path.exists() => {}
                None => self.plan.notes.push(format!(
                    "the entry point nuketown-elevate was not found next to this nuketown binary; install it at {} or sudo requests will fail",
                    town.hall.elevate_path.display()
                )),
            }
            let shim = shim_dir(town);
            self.dir(&At::system(&shim), 0o755, 0, 0, true);
            // The compiled shim finds the entry point one directory up:
            // `<dir of elevatePath>/bin/sudo` → `<dir>/nuketown-elevate`.
            match &pr.shim_binary {
                Some(bin) => {
                    self.file(
                        &At::system(&shim.join("sudo")),
                        Source::CopyOf(Origin::Trusted(bin.clone())),
                        0o755,
                        0,
                        0,
                    );
                }
                None => self.plan.notes.push(format!(
                    "the agents' sudo (nuketown-sudo) was not found next to this nuketown binary; install it as {} or the agents must type the entry point's path after sudo",
                    shim.join("sudo").display()
                )),
            }
        }
        match &opts.privileged {
            Some(pr) if any_sudo || grant => {
                let text = format!("{}{}", pr.sudoers, pr.human_grant);
                if current(&paths.sudoers).as_deref() != Some(text.as_bytes())
                    || !mode_is(&paths.sudoers, 0o440, 0, 0)
                {
                    self.push(Change::Sudoers {
                        path: paths.sudoers.clone(),
                        text,
                    });
                }
            }
            None if any_sudo => self.plan.notes.push(
                "sudo is enabled for some agents but this build cannot render the sudoers drop-in"
                    .into(),
            ),
            _ if paths.sudoers.exists() => self.push(Change::RemoveFile {
                path: paths.sudoers.clone(),
            }),
            _ => {}
        }
    }

    /// The binary the units run, and the units.
    fn units(&mut self, paths: &HostPaths, opts: &Options, chats: bool) {
        if let Some(bin) = &opts.binary {
            let installed = paths.installed_binary(bin);
            if &installed != bin {
                self.dir_chain(&paths.bin_dir, 0o755, 0, 0);
                self.file(
                    &At::system(&installed),
                    Source::CopyOf(Origin::Trusted(bin.clone())),
                    0o755,
                    0,
                    0,
                );
                // The bridge alone, built beside it: `nuketown chat` runs it
                // from there (only a town with chat needs it).
                let lean = bin.with_file_name("nuketown-chat");
                if chats && lean.is_file() {
                    self.file(
                        &At::system(&installed.with_file_name("nuketown-chat")),
                        Source::CopyOf(Origin::Trusted(lean)),
                        0o755,
                        0,
                        0,
                    );
                }
            }
        }
        if !opts.units.is_empty() && paths.systemd_dir.parent().is_some_and(|d| d.is_dir()) {
            self.dir(&At::system(&paths.systemd_dir), 0o755, 0, 0, false);
            let mut changed = false;
            for unit in &opts.units {
                changed |= self.file(
                    &At::system(&paths.systemd_dir.join(&unit.name)),
                    Source::Text(unit.text.clone()),
                    0o644,
                    0,
                    0,
                );
                if let Some(target) = &unit.wanted_by {
                    let wants = paths.systemd_dir.join(format!("{target}.wants"));
                    self.dir(&At::system(&wants), 0o755, 0, 0, false);
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
                            self.push(Change::Symlink {
                                link,
                                target: want.clone(),
                            });
                            changed = true;
                        }
                    }
                }
            }
            for unit in &opts.retired_units {
                let file = paths.systemd_dir.join(&unit.name);
                let link = unit
                    .wanted_by
                    .as_ref()
                    .map(|t| {
                        paths
                            .systemd_dir
                            .join(format!("{t}.wants"))
                            .join(&unit.name)
                    })
                    .filter(|l| l.symlink_metadata().is_ok());
                if !file.exists() && link.is_none() {
                    continue;
                }
                if paths.systemd_running() {
                    self.push(Change::StopUnit {
                        name: unit.name.clone(),
                    });
                }
                for path in link.into_iter().chain(file.exists().then_some(file)) {
                    self.push(Change::RemoveFile { path });
                }
                changed = true;
            }
            if changed && paths.systemd_running() {
                self.push(Change::DaemonReload);
            }
        }
    }

    /// Publish the town for the other binaries (the hall reads its policies here).
    fn publish(&mut self, town: &Town, paths: &HostPaths) {
        self.dir(&At::system(&paths.etc_dir), 0o755, 0, 0, false);
        let town_json = serde_json::to_string_pretty(town).expect("town serialises") + "\n";
        self.file(
            &At::system(&paths.etc_dir.join("town.json")),
            Source::Text(town_json),
            0o644,
            0,
            0,
        );
    }

    /// The humans' side of the trust graph ([`crate::trust`]): the allowed
    /// signers, the system git configuration that names them, and the GPG
    /// agents' public keys in each human's keyring.
    fn trust(&mut self, town: &Town, paths: &HostPaths) -> Result<(), HostError> {
        self.dir(&At::system(&paths.etc_dir), 0o755, 0, 0, false);
        self.file(
            &At::system(&crate::trust::allowed_signers(paths)),
            Source::AllowedSigners(crate::trust::signers(town)),
            0o644,
            0,
            0,
        );
        let include = crate::trust::git_include(paths);
        self.file(
            &At::system(&include),
            Source::Text(crate::trust::git_include_text(paths)),
            0o644,
            0,
            0,
        );
        let config = &paths.gitconfig;
        match config.symlink_metadata() {
            Ok(m) if !m.is_file() => self.plan.notes.push(format!(
                "{} is not a file of its own (managed elsewhere, e.g. NixOS's programs.git): add `[include] path = {}` there for git to verify the agents' SSH signatures",
                config.display(),
                include.display()
            )),
            _ if crate::trust::includes(config, &include) => {}
            _ => self.push(Change::GitInclude {
                config: config.clone(),
                include,
            }),
        }
        for (agent, key) in crate::trust::gpg_keys(town)? {
            let fpr = gpg_fingerprint(&key).map_err(|e| {
                HostError::Conflict(format!("agents.{agent}.secrets.gpgKey: {key}: {e}"))
            })?;
            for human in town.humans() {
                // A human without a GnuPG home has no key yet (and plan makes none).
                let keyring = system::user(&human).is_some_and(|a| a.home.join(".gnupg").is_dir());
                if !(keyring && gpg_has_key(&human, &fpr, "--list-keys")) {
                    self.push(Change::ImportGpgPublic {
                        user: human.clone(),
                        agent: agent.clone(),
                        email: town.identity(&agent).email,
                        key: key.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `portal-<agent>` for each agent with `portal.enable`, and `portal`,
    /// on the humans' PATH (beside the installed binary); ones an earlier
    /// apply wrote and the town no longer wants go.
    fn portals(&mut self, town: &Town, paths: &HostPaths, opts: &Options) {
        let nuketown = opts.binary.as_deref().map_or_else(
            || paths.bin_dir.join("nuketown"),
            |b| paths.installed_binary(b),
        );
        let wanted = crate::portal::commands(town, &nuketown, &paths.etc_dir.join("town.json"));
        if !wanted.is_empty() {
            self.dir_chain(&paths.bin_dir, 0o755, 0, 0);
        }
        for (name, text) in &wanted {
            self.file(
                &At::system(&paths.bin_dir.join(name)),
                Source::Text(text.clone()),
                0o755,
                0,
                0,
            );
        }
        for old in crate::portal::installed_commands(&paths.bin_dir) {
            let name = old.file_name().map(|n| n.to_string_lossy().into_owned());
            if !wanted.iter().any(|(w, _)| Some(w) == name.as_ref()) {
                self.push(Change::RemoveFile { path: old });
            }
        }
    }

    /// What only NixOS (home-manager) does with the town, said once per
    /// key for the agents this host lays down itself.
    fn nix_only(&mut self, town: &Town, paths: &HostPaths) {
        let here: Vec<(&String, &Agent)> = town
            .host_agents()
            .filter(|(n, _)| !home_manager_manages(paths, n))
            .collect();
        if here.is_empty() {
            return;
        }
        let fix = "install them with the host's package manager (they are then every user's), or run the town on NixOS";
        if !town.base_packages.is_empty() {
            self.plan.notes.push(format!(
                "basePackages ({}) take effect only on NixOS, where home-manager installs them for each agent; here the agents use the host's own commands: {fix}",
                town.base_packages.join(", ")
            ));
        }
        for (name, agent) in &here {
            if !agent.packages.is_empty() {
                self.plan.notes.push(format!(
                    "agents.{name}.packages ({}) take effect only on NixOS (home-manager); here {name} uses the host's own commands: {fix}",
                    agent.packages.join(", ")
                ));
            }
            if !agent.extra_home_config.is_null() {
                self.plan.notes.push(format!(
                    "agents.{name}.extraHomeConfig is home-manager configuration and takes effect only on NixOS; this host ignores it"
                ));
            }
        }
    }

    /// Agents no longer in the town, or now declared for the cloud only:
    /// noted, or removed with `--prune`.
    fn departed(&mut self, town: &Town, opts: &Options, state: &State, new_state: &mut State) {
        for (name, managed) in &state.agents {
            if town.agents.get(name).is_some_and(|a| a.on_host()) {
                continue;
            }
            // Declared for the cloud only: gone from this host exactly as if
            // it had left the town (its data stays unless --purge).
            let gone = if town.agents.get(name).is_some_and(|a| a.cloud_only()) {
                format!("is declared for the cloud only now (agents.{name}.host.enable = false)")
            } else {
                "is no longer in the town".to_string()
            };
            if opts.prune {
                if system::user(name).is_some_and(|a| a.uid == managed.uid) {
                    self.push(Change::RemoveUser {
                        name: name.clone(),
                        home: At::system(&managed.home),
                    });
                } else if managed.home.exists() {
                    self.push(Change::RemoveTree {
                        at: At::system(&managed.home),
                    });
                }
                if opts.purge && managed.persist.exists() {
                    self.push(Change::RemoveTree {
                        at: At::system(&managed.persist),
                    });
                }
                // Its generated key goes with its persist dir, from the same place.
                let base = managed
                    .persist
                    .parent()
                    .map_or_else(|| persist_agents(town), Path::to_path_buf);
                let store = At::new(base, Path::new(KEY_STORE).join(name));
                if opts.purge && store.path().exists() {
                    self.push(Change::RemoveTree { at: store });
                }
                new_state.agents.remove(name);
            } else {
                self.plan.notes.push(format!(
                    "agent {name} (uid {}) {gone}; `apply --prune` removes its user and home (its persist dir {} is kept unless --purge)",
                    managed.uid,
                    managed.persist.display()
                ));
            }
        }
    }
}

/// The first existing directory above `path` (and `path` itself with
/// `itself`) that others may not search, with its mode.
fn unsearchable(path: &Path, itself: bool) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    dirs.reverse();
    if itself {
        dirs.push(path);
    }
    dirs.into_iter().find_map(|d| {
        let m = fs::metadata(d).ok()?;
        (m.is_dir() && m.mode() & 0o001 == 0).then(|| (d.to_path_buf(), m.mode() & 0o7777))
    })
}

/// Whether home-manager (the NixOS module) lays down `name`'s dotfiles:
/// its unit `home-manager-<name>.service` is installed.
pub fn home_manager_manages(paths: &HostPaths, name: &str) -> bool {
    paths
        .systemd_dir
        .join(crate::round::home_manager_unit(name))
        .exists()
}

/// The humans' side of the trust graph alone ([`crate::trust`]): what
/// `reset --all` and `keys rotate` republish.
pub fn plan_trust(town: &Town, paths: &HostPaths) -> Result<Plan, HostError> {
    let mut p = Planner {
        home_manager: false,
        secrets_dir: paths.secrets_dir.clone(),
        plan: Plan::default(),
        made: BTreeSet::new(),
    };
    p.trust(town, paths)?;
    Ok(p.plan)
}

/// The changes that lay down one agent (user, home, persist binds, keys,
/// identity files, secrets) and nothing else: what a new round re-applies.
pub fn plan_agent(town: &Town, name: &str, paths: &HostPaths) -> Result<Plan, HostError> {
    let mut p = Planner {
        home_manager: home_manager_manages(paths, name),
        secrets_dir: paths.secrets_dir.clone(),
        plan: Plan::default(),
        made: BTreeSet::new(),
    };
    let state = State::load(&paths.state_dir)?;
    let agent = town.host_agent(name).map_err(HostError::Conflict)?;
    p.dir(&At::system(&town.agents_dir), 0o755, 0, 0, true);
    if let Some(parent) = town.persist_dir.parent() {
        p.dir_chain(parent, 0o755, 0, 0);
    }
    p.dir(&At::system(&town.persist_dir), 0o755, 0, 0, false);
    p.dir(&At::system(&persist_agents(town)), 0o755, 0, 0, true);
    p.agent(town, name, agent, &state)?;
    Ok(p.plan)
}

/// The first two words of a public key line (type and key), without the comment.
fn key_words(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn current(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}

fn mode_is(path: &Path, mode: u32, uid: u32, gid: u32) -> bool {
    system::owner_mode(path) == Some((mode, uid, gid))
}

/// Where to read a file the town declares (a key, a secret): inside an
/// agent's home or persist dir it is read beneath it, and must be that
/// agent's own file (in root's key store, root's); elsewhere by its path.
pub fn origin(town: &Town, path: &Path) -> Result<Origin, HostError> {
    let persist = persist_agents(town);
    for base in [&town.agents_dir, &persist] {
        let Ok(rel) = path.strip_prefix(base) else {
            continue;
        };
        let first = rel.components().next();
        let owner = match first {
            Some(Component::Normal(n)) if n == KEY_STORE && *base == persist => 0,
            Some(Component::Normal(n)) => town
                .agents
                .get(&*n.to_string_lossy())
                .map(|a| a.uid)
                .ok_or_else(|| {
                    HostError::Conflict(format!(
                        "{}: lies in {} but in no agent's tree; keep declared files outside agentsDir and persistDir/agents",
                        path.display(),
                        base.display()
                    ))
                })?,
            _ => {
                return Err(HostError::Conflict(format!(
                    "{} is not a file",
                    path.display()
                )))
            }
        };
        return Ok(Origin::Beneath {
            at: At::new(base, rel),
            owner,
        });
    }
    Ok(Origin::Trusted(path.to_path_buf()))
}

/// Where to read a key or secret the town names: a file by its path (see
/// [`origin`]), or a sops secret by its name in the town's `sopsFile`.
pub fn secret_origin(town: &Town, named: &Path) -> Result<Origin, HostError> {
    if named.is_absolute() {
        return origin(town, named);
    }
    let Some(file) = &town.sops_file else {
        return Err(HostError::Conflict(format!(
            "{} names a sops secret, but the town declares no sopsFile",
            named.display()
        )));
    };
    // The sops file is read by sops as root, by its path: never from a tree an agent controls.
    let file = std::path::absolute(file).map_err(HostError::io(file))?;
    if file.starts_with(&town.agents_dir) || file.starts_with(persist_agents(town)) {
        return Err(HostError::Conflict(format!(
            "sopsFile {} lies in an agent's tree; keep it outside agentsDir and persistDir/agents",
            file.display()
        )));
    }
    Ok(Origin::Sops {
        file,
        name: named.to_string_lossy().into_owned(),
    })
}

/// What is at `at` now, read beneath its base; an error (a link on the way)
/// as `Err`, so the planner plans the change whose making will refuse it.
fn meta(at: &At) -> Result<Option<Meta>, HostError> {
    at.meta()
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
    fn dir(&mut self, at: &At, mode: u32, uid: u32, gid: u32, strict: bool) {
        let path = at.path();
        if self.made.contains(&path) {
            return; // already planned
        }
        let (ok, new) = match meta(at) {
            Ok(Some(m)) if m.kind == Kind::Dir => {
                (!strict || (m.mode, m.uid, m.gid) == (mode, uid, gid), false)
            }
            Ok(Some(_)) | Err(_) => (false, false),
            Ok(None) => (false, true),
        };
        if !ok {
            self.made.insert(path);
            self.push(Change::Dir {
                at: at.clone(),
                mode,
                uid,
                gid,
                new,
            });
        }
    }

    /// Ensure a system directory and its missing ancestors.
    fn dir_chain(&mut self, dir: &Path, mode: u32, uid: u32, gid: u32) {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| !a.exists())
            .map(Path::to_path_buf)
            .collect();
        for d in missing.into_iter().rev() {
            self.dir(&At::system(&d), mode, uid, gid, false);
        }
    }

    /// Ensure the directories from `root` (exclusive) down to `at`'s parent.
    fn parents(&mut self, root: &At, at: &At, mode: u32, uid: u32, gid: u32) {
        let Ok(below) = at.rel.strip_prefix(&root.rel) else {
            return;
        };
        let comps: Vec<_> = below.components().collect();
        let mut dir = root.clone();
        for c in &comps[..comps.len().saturating_sub(1)] {
            dir = dir.join(c);
            self.dir(&dir, mode, uid, gid, false);
        }
    }

    /// Ensure a file's contents, mode and owner; true if a change is planned.
    /// A link, FIFO or someone else's file there is simply "not the file":
    /// the change replaces it (by rename, never writing through it).
    fn file(&mut self, at: &At, source: Source, mode: u32, uid: u32, gid: u32) -> bool {
        let same = match (Tree::open(&at.base), source.bytes()) {
            (Ok(tree), Ok(want)) => tree.holds(&at.rel, &want, mode, uid, gid),
            _ => false,
        };
        if !same {
            let new = matches!(meta(at), Ok(None));
            self.push(Change::File {
                at: at.clone(),
                source,
                mode,
                uid,
                gid,
                new,
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
        let gid = self.account(town, name, agent, state)?;
        let cx = Ctx {
            name,
            agent,
            uid: agent.uid,
            gid,
            home: At::new(&town.agents_dir, name),
            persist: At::new(persist_agents(town), name),
        };
        self.home_and_persist(town, &cx);
        let key = self.ssh_key(town, &cx)?;
        let signing = self.signing(town, &cx, &key)?;
        self.secrets(town, &cx)?;
        self.credentials(town, &cx)?;
        if self.home_manager {
            // NixOS: home-manager's activation (restarted by reset) writes the rest.
            return Ok(());
        }
        self.identity(town, &cx, &signing);
        Ok(())
    }

    /// An agent has no subordinate ids: with `newuidmap` it would own files
    /// as ids that are nobody's, which nothing could tell from a stranger's.
    /// Ranges `useradd` gave earlier (or someone added) are taken away.
    fn no_subordinate_ids(&mut self, name: &str, uid: u32) {
        let subuids = system::subordinate_ranges(Path::new("/etc/subuid"), name, uid);
        let subgids = system::subordinate_ranges(Path::new("/etc/subgid"), name, uid);
        if subuids.is_empty() && subgids.is_empty() {
            return;
        }
        let mut args = Vec::new();
        for r in &subuids {
            args.extend(["--del-subuids".to_string(), r.clone()]);
        }
        for r in &subgids {
            args.extend(["--del-subgids".to_string(), r.clone()]);
        }
        self.push(Change::ModifyUser {
            name: name.into(),
            what: format!(
                "no subordinate ids (was uids {}, gids {})",
                if subuids.is_empty() {
                    "none".into()
                } else {
                    subuids.join(",")
                },
                if subgids.is_empty() {
                    "none".into()
                } else {
                    subgids.join(",")
                }
            ),
            args,
        });
    }

    /// The private group, the user, and group memberships; returns the gid.
    fn account(
        &mut self,
        town: &Town,
        name: &str,
        agent: &Agent,
        state: &State,
    ) -> Result<u32, HostError> {
        let home = town.home_of(name);
        let uid = agent.uid;
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
                    no_subordinate_ids: true,
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
        self.no_subordinate_ids(name, uid);
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
        Ok(gid)
    }

    /// The home, the persist root, and each persisted path bound into the home.
    fn home_and_persist(&mut self, town: &Town, cx: &Ctx<'_>) {
        let (uid, gid) = (cx.uid, cx.gid);
        if matches!(meta(&cx.home), Ok(None)) {
            let subvolume = crate::home::on_btrfs(&town.agents_dir);
            self.made.insert(cx.home.path());
            self.push(Change::Home {
                at: cx.home.clone(),
                uid,
                gid,
                subvolume,
            });
        } else {
            self.dir(&cx.home, 0o700, uid, gid, true);
        }
        self.dir(&cx.persist, 0o700, uid, gid, true);
        let mounts = system::mount_points();
        let persisted = cx
            .agent
            .persist
            .directories
            .iter()
            .map(|d| (d, true))
            .chain(cx.agent.persist.files.iter().map(|f| (f, false)));
        for (rel, is_dir) in persisted {
            let src = cx.persist.join(rel);
            let dst = cx.home.join(rel);
            self.parents(&cx.persist, &src, 0o700, uid, gid);
            self.parents(&cx.home, &dst, 0o755, uid, gid);
            if is_dir {
                self.dir(&src, 0o700, uid, gid, false);
                self.dir(&dst, 0o700, uid, gid, false);
            } else {
                for at in [&src, &dst] {
                    if !matches!(meta(at), Ok(Some(_))) {
                        self.push(Change::Touch {
                            at: at.clone(),
                            mode: 0o600,
                            uid,
                            gid,
                        });
                    }
                }
            }
            if !mounts.contains(&dst.path()) {
                self.push(Change::Bind {
                    source: src,
                    owner: uid,
                    target: dst,
                });
            }
        }
    }

    /// The SSH key, held by the town: generated into the key store, or
    /// imported there (a declared `secrets.sshKey`, a key an older nuketown
    /// kept as a file). Only its public half goes into the home
    /// (`~/.ssh/id_ed25519.pub`); a private key nuketown once installed
    /// there is removed. Returns the key's place in the store (its `.pub`
    /// beside it is what is published).
    fn ssh_key(&mut self, town: &Town, cx: &Ctx<'_>) -> Result<Origin, HostError> {
        let name = cx.name;
        let key = generated_key(town, name);
        let store_dir = persist_agents(town).join(KEY_STORE);
        let root = At::new(&key.base, "");
        self.dir(&root.join(KEY_STORE), 0o700, 0, 0, true);
        self.dir(&root.join(KEY_STORE).join(name), 0o700, 0, 0, true);
        let sealed = matches!(
            meta(&root.join(KEY_STORE).join(name).join(nuketown_keys::store::SEALED)),
            Ok(Some(m)) if m.kind == Kind::File
        );
        let stored = Source::PublicKeyOf(Origin::Beneath {
            at: key.clone(),
            owner: 0,
        })
        .bytes()
        .ok()
        .filter(|_| sealed);
        let plain = !matches!(meta(&key), Ok(None));
        let old = cx.persist.join(OLD_GENERATED_KEY);
        let old_there = !matches!(meta(&old), Ok(None));
        match &cx.agent.secrets.ssh_key {
            Some(k) => {
                let o = secret_origin(town, k)?;
                if !o.exists() {
                    return Err(HostError::Conflict(format!(
                        "agents.{name}.secrets.sshKey: {} does not exist; point it at the agent's private key or remove the key to have one generated",
                        k.display()
                    )));
                }
                let want = crate::change::public_key(&o).map_err(|e| {
                    HostError::Conflict(format!("agents.{name}.secrets.sshKey: {e}"))
                })?;
                if let Some(declared) = &cx.agent.keys.public_key {
                    if key_words(declared.as_bytes()) != key_words(&want) {
                        return Err(HostError::Conflict(format!(
                            "agents.{name}.keys.publicKey is not the public half of secrets.sshKey ({o}, whose public key is {}); declare the key's own public half, or the private key that belongs to it",
                            key_words(&want)
                        )));
                    }
                }
                if stored.as_deref().map(key_words) != Some(key_words(&want)) {
                    self.push(Change::ImportSshKey {
                        agent: name.into(),
                        store: store_dir.clone(),
                        from: o,
                        remove: false,
                    });
                }
            }
            None if !sealed => {
                // A key an older nuketown kept as root's file is imported
                // (then removed), so the agent keeps its identity. A key in
                // the agent's own persist dir is never imported: the agent
                // could have put it there (and keep a copy), and the town's
                // key would be one the agent holds. A new one is made, and
                // the file there goes.
                if plain {
                    self.push(Change::ImportSshKey {
                        agent: name.into(),
                        store: store_dir.clone(),
                        from: Origin::Beneath {
                            at: key.clone(),
                            owner: 0,
                        },
                        remove: true,
                    });
                } else {
                    if old_there {
                        self.push(Change::ForgetKeyFile { at: old.clone() });
                        self.plan.notes.push(format!(
                            "{name}: the private key at {old} is in {name}'s own reach, so it is not taken as {name}'s key; a new key is made in the town's store (authorize its public key where the old one was, or set agents.{name}.secrets.sshKey to a key only root can read)"
                        ));
                    }
                    self.push(Change::GenerateSshKey {
                        agent: name.into(),
                        store: store_dir.clone(),
                        comment: format!("{name}@{}", town.domain()),
                    });
                }
            }
            None if cx.agent.keys.public_key.as_deref().is_some_and(|d| {
                stored.as_deref().map(key_words) != Some(key_words(d.as_bytes()))
            }) =>
            {
                return Err(HostError::Conflict(format!(
                    "agents.{name}.keys.publicKey is not the key the town holds for {name} ({}); declare secrets.sshKey with its private half, or remove keys.publicKey (`nuketown keys list` shows the key held)",
                    stored.as_deref().map(key_words).unwrap_or_default()
                )));
            }
            None => {
                // Sealed already: private key files left at the old places go.
                if plain {
                    self.push(Change::ForgetKeyFile { at: key.clone() });
                }
                if old_there {
                    self.push(Change::ForgetKeyFile { at: old.clone() });
                }
            }
        }
        let ssh = cx.home.join(".ssh");
        self.dir(&ssh, 0o700, cx.uid, cx.gid, true);
        let installed = ssh.join("id_ed25519");
        if matches!(meta(&installed), Ok(Some(m)) if m.kind != Kind::Dir) {
            self.push(Change::ForgetKeyFile {
                at: installed.clone(),
            });
            self.plan.notes.push(format!(
                "{name}: the private key at {installed} is removed: the town holds {name}'s key now and signs through {name}'s socket {} (SSH_AUTH_SOCK); ssh, git push and git signing work unchanged",
                nuketown_keys::agent::socket_path(
                    Path::new(nuketown_keys::agent::SOCKET_DIR),
                    name
                )
                .display()
            ));
        }
        let key = Origin::Beneath { at: key, owner: 0 };
        self.file(
            &ssh.join("id_ed25519.pub"),
            Source::PublicKeyOf(key.clone()),
            0o644,
            cx.uid,
            cx.gid,
        );
        Ok(key)
    }

    /// How the agent signs (GPG, imported as the agent; else its SSH key) and
    /// the `allowed_signers` that verifies it.
    fn signing(&mut self, town: &Town, cx: &Ctx<'_>, key: &Origin) -> Result<Signing, HostError> {
        let name = cx.name;
        let signing = match &cx.agent.secrets.gpg_key {
            Some(gpg) => {
                let origin = secret_origin(town, gpg)?;
                let fpr = gpg_fingerprint(&origin).map_err(|e| {
                    HostError::Conflict(format!(
                        "agents.{name}.secrets.gpgKey: {}: {e}",
                        gpg.display()
                    ))
                })?;
                self.dir(&cx.home.join(".gnupg"), 0o700, cx.uid, cx.gid, true);
                if !gpg_has_key(name, &fpr, "--list-secret-keys") {
                    self.push(Change::ImportGpgKey {
                        user: name.into(),
                        key: origin,
                    });
                }
                Signing::Gpg(fpr)
            }
            None => Signing::Ssh(".ssh/id_ed25519.pub".into()),
        };
        let signers = cx.home.join(".config/git/allowed_signers");
        self.parents(&cx.home, &signers, 0o755, cx.uid, cx.gid);
        self.file(
            &signers,
            Source::AllowedSigner {
                email: town.identity(name).email.clone(),
                key: key.clone(),
            },
            0o644,
            cx.uid,
            cx.gid,
        );
        Ok(signing)
    }

    /// Declared extra secrets, the agent's alone: with a `path`, copied into
    /// the home; a sops secret without one installed where sops-nix would
    /// (`<secrets dir>/<name>`, in root's directories); a file without one
    /// stays where it is.
    fn secrets(&mut self, town: &Town, cx: &Ctx<'_>) -> Result<(), HostError> {
        let name = cx.name;
        for (sname, secret) in &cx.agent.secrets.extra_secrets {
            let key = format!("agents.{name}.secrets.extraSecrets.{sname}");
            let mode = u32::from_str_radix(&secret.mode, 8).unwrap_or(0o400);
            let Some(src) = &secret.source else {
                self.plan.notes.push(format!(
                    "{key} has no source on this host; skipped (name its sops secret with a sopsFile, or its file)"
                ));
                continue;
            };
            if let Some(api) = &secret.gateway {
                // Handed to the gateway (imported by `credentials`): a copy
                // placed in the agent's tree before goes.
                if let Some(path) = &secret.path {
                    for base in [&cx.home, &cx.persist] {
                        let at = base.join(path);
                        if matches!(meta(&at), Ok(Some(m)) if m.kind != Kind::Dir) {
                            self.push(Change::ForgetSecretFile { at });
                        }
                    }
                }
                self.plan.notes.push(format!(
                    "{key}: handed to the town's gateway ({api}); it is no longer placed where {name} reads, and {name}'s tools reach it through the gateway (127.0.0.1:{})",
                    town.hall.gateway.port
                ));
                continue;
            }
            let origin = secret_origin(town, src)?;
            if !origin.exists() {
                return Err(HostError::Conflict(format!(
                    "{key}.source: {origin} does not exist"
                )));
            }
            match (&secret.path, &origin) {
                (Some(path), _) => {
                    let dst = cx.home.join(path);
                    self.parents(&cx.home, &dst, 0o700, cx.uid, cx.gid);
                    self.file(&dst, Source::CopyOf(origin), mode, cx.uid, cx.gid);
                }
                (None, Origin::Sops { name: sops, .. }) => {
                    let root = At::system(&self.secrets_dir);
                    self.dir(&root, 0o755, 0, 0, true);
                    let dst = root.join(sops);
                    self.parents(&root, &dst, 0o755, 0, 0);
                    let copy = Source::CopyOf(origin.clone());
                    self.file(&dst, copy, mode, cx.uid, cx.gid);
                }
                (None, _) => {}
            }
        }
        Ok(())
    }

    /// The agent's credentials, sealed into the town's key store (compared
    /// with the sealed copy, imported when it differs); sealed ones no
    /// longer declared are forgotten. A systemd credential is the hall's
    /// to import when it starts (it is handed to the hall's unit).
    fn credentials(&mut self, town: &Town, cx: &Ctx<'_>) -> Result<(), HostError> {
        let name = cx.name;
        let store = persist_agents(town).join(KEY_STORE);
        let declared = town.credentials_of(name);
        let sealing = nuketown_keys::SealingKey::load(&nuketown_keys::sealing::default_path()).ok();
        let sealed = sealing.map(|k| nuketown_keys::Store::new(&store, k));
        for (cname, cred) in &declared {
            let key = if cred.source.is_some() && cx.agent.credentials.contains_key(cname) {
                format!("agents.{name}.credentials.{cname}.source")
            } else {
                format!("agents.{name}.secrets.extraSecrets.{cname}.source")
            };
            let Some(src) = &cred.source else {
                continue;
            };
            let origin = secret_origin(town, src)?;
            if !origin.exists() {
                return Err(HostError::Conflict(format!(
                    "{key}: {origin} does not exist; point it at the secret (a sops secret's name, or a file only root reads)"
                )));
            }
            let secret = zeroize::Zeroizing::new(origin.read()?);
            if !sealed
                .as_ref()
                .is_some_and(|s| s.credential_is(name, cname, &secret))
            {
                self.push(Change::ImportCredential {
                    agent: name.into(),
                    name: cname.clone(),
                    store: store.clone(),
                    from: origin,
                });
            }
        }
        if let Some(s) = &sealed {
            for old in s.credential_names(name) {
                if !declared.contains_key(&old) {
                    self.push(Change::ForgetCredential {
                        agent: name.into(),
                        name: old,
                        store: store.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Git config, identity projections and shell start-up files.
    fn identity(&mut self, town: &Town, cx: &Ctx<'_>, signing: &Signing) {
        let (uid, gid) = (cx.uid, cx.gid);
        let identity = town.identity(cx.name);
        self.file(
            &cx.home.join(".gitconfig"),
            Source::Text(identity.gitconfig(Some(signing))),
            0o644,
            uid,
            gid,
        );
        for proj in town.projections(cx.name) {
            let at = cx.home.join(&proj.path);
            self.parents(&cx.home, &at, 0o755, uid, gid);
            self.file(&at, Source::Text(proj.contents), proj.mode, uid, gid);
        }
        let shim_dir = shim_dir(town);
        let shim = cx
            .agent
            .sudo
            .enable
            .then_some((shim_dir.as_path(), town.hall.elevate_path.as_path()));
        self.file(
            &cx.home.join(".profile"),
            Source::Text(render::profile() + &render::gateway_exports(&town.gateway_env(cx.name))),
            0o644,
            uid,
            gid,
        );
        self.file(
            &cx.home.join(".bashrc"),
            Source::Text(
                render::bashrc(cx.name, shim)
                    + &render::gateway_exports(&town.gateway_env(cx.name)),
            ),
            0o644,
            uid,
            gid,
        );
    }
}

/// A fresh private GnuPG home for reading `file`'s key, and who gpg runs as
/// there: the file's owner when it comes from an agent's tree (given the
/// home), else root.
struct ScratchGpg {
    home: crate::safe::PrivateDir,
    owner: Option<u32>,
}

impl ScratchGpg {
    fn for_file(file: &Origin) -> Result<ScratchGpg, String> {
        let home = crate::safe::PrivateDir::new("nuketown-gpg").map_err(|e| e.to_string())?;
        let owner = match file {
            Origin::Beneath { owner, .. } if *owner != 0 => Some(*owner),
            _ => None,
        };
        if let Some(uid) = owner {
            let gid = system::user_by_uid(uid).map_or(uid, |a| a.gid);
            home.give_to(uid, gid).map_err(|e| e.to_string())?;
        }
        Ok(ScratchGpg { home, owner })
    }

    /// `gpg --homedir <home> --batch ARGS…`, `input` on stdin.
    fn gpg(&self, args: &[&str], input: &[u8]) -> Result<std::process::Output, HostError> {
        let mut all = vec![
            std::ffi::OsStr::new("--homedir"),
            self.home.path().as_os_str(),
            "--batch".as_ref(),
        ];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        system::run_with_input("gpg", all, input, self.owner)
    }
}

/// The fingerprint of the (first) key in an armored key file, read without
/// a keyring: the bytes are read as root (see [`Origin`]) and given to gpg
/// on stdin, with a fresh private GnuPG home; a file from an agent's tree
/// is parsed by gpg running as that agent.
pub fn gpg_fingerprint(file: &Origin) -> Result<String, String> {
    let bytes = file.read().map_err(|e| e.to_string())?;
    let scratch = ScratchGpg::for_file(file)?;
    let out = scratch.gpg(&["--with-colons", "--show-keys"], &bytes);
    let out = out.map_err(|e| format!("not a GPG key file: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .map(str::to_string)
        .ok_or_else(|| "no key found in the file".to_string())
}

/// The armored public half of the (first) key in an armored private key
/// file, with only its user ids for `email`: imported into a fresh private
/// GnuPG home and exported from there (gpg running as the file's owner when
/// it comes from an agent's tree), whose agent is stopped and home removed
/// afterwards. Only the agent's own address goes to the humans' keyrings:
/// a user id naming anyone else would let the agent's signatures show as theirs.
pub fn gpg_public(file: &Origin, email: &str) -> Result<Vec<u8>, String> {
    let fpr = gpg_fingerprint(file)?;
    let bytes = zeroize::Zeroizing::new(file.read().map_err(|e| e.to_string())?);
    let scratch = ScratchGpg::for_file(file)?;
    let imported = scratch.gpg(&["--import"], &bytes);
    let keep = format!("keep-uid=mbox = {email}");
    let exported = imported.and_then(|_| {
        let export = ["--armor", "--export-options", "export-minimal"];
        let filter = ["--export-filter", &keep, "--export", &fpr];
        scratch.gpg(&[&export[..], &filter[..]].concat(), b"")
    });
    // The import started a gpg-agent for the scratch home: stop it.
    let home = scratch.home.path().as_os_str();
    let kill = [
        std::ffi::OsStr::new("--homedir"),
        home,
        "--kill".as_ref(),
        "all".as_ref(),
    ];
    let _ = system::run_with_input("gpgconf", kill, b"", scratch.owner);
    let out = exported.map_err(|e| format!("cannot take its public key: {e}"))?;
    if out.stdout.is_empty() {
        return Err(format!(
            "the key has no user id for {email}, the agent's git e-mail; give it one (`gpg --quick-add-uid`) or set git.email to its address"
        ));
    }
    Ok(out.stdout)
}

/// Whether `user`'s keyring holds the key `fpr` (`list`: `--list-keys`
/// for a public key, `--list-secret-keys` for a secret one); gpg runs as the user.
fn gpg_has_key(user: &str, fpr: &str, list: &str) -> bool {
    if system::user(user).is_none() {
        return false;
    }
    let mut c = system::as_user(user, "gpg");
    c.args(["--batch", list, fpr]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c.status().is_ok_and(|s| s.success())
}
