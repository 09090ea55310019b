//! `nuketown keys`: the agents' keys the town holds — list, pause, resume, rotate.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use nuketown_keys::store::{fingerprint, STORE_DIR};
use nuketown_keys::{SealingKey, Store};
use nuketown_town::Town;

/// The agents' keys, held by the town: agents use them through their own
/// ssh-agent socket and never hold them.
///
/// `pause` stops every use of an agent's keys at once (the next signature or
/// login is refused, also one a human is deciding), without changing them;
/// `resume` lets them be used again; `rotate` makes a new key and says what
/// must be authorised again. Run as root.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Each agent's key: fingerprint, public key, paused or not.
    List {
        /// Print authorized_keys lines instead (`<key> <agent>@<domain>`),
        /// one per agent (or AGENT's alone), for the machines the agents reach.
        #[arg(long)]
        authorized_keys: bool,
        /// Only this agent.
        agent: Option<String>,
    },
    /// Refuse every use of AGENT's keys from now on.
    Pause {
        /// The agent.
        agent: String,
    },
    /// Let AGENT's keys be used again.
    Resume {
        /// The agent.
        agent: String,
    },
    /// Replace AGENT's key by a new one (the old one is never usable again).
    Rotate {
        /// The agent.
        agent: String,
    },
}

/// The gateway's pause marker for `name` (`hall.gateway.runDir/paused`),
/// read on every call: a pause stops the agent's credentials at once.
fn gateway_pause(town: &Town, name: &str, paused: bool) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = town
        .hall
        .gateway
        .run_dir
        .join(nuketown_town::credentials::PAUSED);
    let marker = dir.join(name);
    if paused {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .with_context(|| dir.display().to_string())?;
        std::fs::write(&marker, "paused\n").with_context(|| marker.display().to_string())?;
    } else if let Err(e) = std::fs::remove_file(&marker) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| marker.display().to_string());
        }
    }
    Ok(())
}

/// The town's key store, opened with its sealing key.
pub fn store(town: &Town) -> Result<Store> {
    let path = nuketown_keys::sealing::default_path();
    let sealing = SealingKey::load_or_create(&path)
        .with_context(|| format!("the sealing key {}", path.display()))?;
    Ok(Store::new(
        &town.persist_dir.join("agents").join(STORE_DIR),
        sealing,
    ))
}

fn agent<'a>(town: &'a Town, name: &str) -> Result<&'a nuketown_town::Agent> {
    match town.agents.get(name) {
        Some(a) => Ok(a),
        None => bail!(
            "{name} is not an agent of this town (agents: {})",
            town.agents.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Run it.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    let store = store(&town)?;
    match args.action {
        Action::List {
            authorized_keys: true,
            agent: only,
        } => {
            if let Some(a) = &only {
                agent(&town, a)?;
            }
            for (name, _) in town.host_agents() {
                if only.as_ref().is_some_and(|a| a != name) {
                    continue;
                }
                match store.public(name)? {
                    Some(k) => {
                        let line = k.to_openssh().unwrap_or_default();
                        let words: Vec<&str> = line.split_whitespace().take(2).collect();
                        println!("{} {name}@{}", words.join(" "), town.domain());
                    }
                    None if only.is_some() => {
                        bail!("{name} has no key yet; `nuketown apply` makes one")
                    }
                    None => eprintln!("{name}: no key yet (`nuketown apply` makes one)"),
                }
            }
        }
        Action::List { agent: only, .. } => {
            if let Some(a) = &only {
                agent(&town, a)?;
            }
            for (name, _) in town.host_agents() {
                if only.as_ref().is_some_and(|a| a != name) {
                    continue;
                }
                match store.public(name) {
                    Ok(Some(k)) => println!(
                        "{name}: {}{}\n  {}",
                        fingerprint(&k),
                        if store.paused(name) { " (paused)" } else { "" },
                        k.to_openssh().unwrap_or_default()
                    ),
                    Ok(None) => println!("{name}: no key yet (`nuketown apply` makes one)"),
                    Err(e) => println!("{name}: {e}"),
                }
            }
        }
        Action::Pause { agent: name } => {
            agent(&town, &name)?;
            store.pause(&name)?;
            gateway_pause(&town, &name, true)?;
            println!("{name}'s keys are paused: every signature, login and use of its credentials is refused until `nuketown keys resume {name}`");
        }
        Action::Resume { agent: name } => {
            agent(&town, &name)?;
            store.resume(&name)?;
            gateway_pause(&town, &name, false)?;
            println!("{name}'s keys and credentials can be used again");
        }
        Action::Rotate { agent: name } => {
            agent(&town, &name)?;
            let comment = format!("{name}@{}", town.domain());
            let (old, new) = store.rotate(&name, &comment)?;
            let line = new.to_openssh().unwrap_or_default();
            match old {
                Some(old) => println!(
                    "{name}'s key {} is gone; the new key is {}:\n  {line}\n\
                     Authorise it again wherever the old one was: the forges and servers {name} pushes to \
                     (authorized_keys, deploy keys, account SSH keys) and the allowed_signers files that verify \
                     its commits (commits signed with the old key still verify with the old public key, kept in \
                     {}/{name}/retired/). `nuketown apply` republishes it in {name}'s home.",
                    fingerprint(&old),
                    fingerprint(&new),
                    store.dir().display()
                ),
                None => println!("{name} had no key; its key is {}:\n  {line}", fingerprint(&new)),
            }
            // The humans' allowed signers follow at once.
            let paths = nuketown_host::HostPaths::from_env();
            match nuketown_host::round::publish_trust(&town, &paths) {
                Ok(done) => {
                    for line in done {
                        println!("{line}");
                    }
                }
                Err(e) => eprintln!(
                    "the humans' allowed signers were NOT updated ({e}); `nuketown apply` updates them"
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
