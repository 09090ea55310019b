//! One module per subcommand.

pub mod apply;
pub mod approvals;
pub mod ask;
pub mod audit;
pub mod chat;
pub mod cloud;
pub mod devices;
pub mod gateway;
pub mod hall;
pub mod keys;
pub mod mcp;
pub mod plan;
pub mod portal;
pub mod rebuild;
pub mod render;
pub mod reset;
pub mod rooms;
pub mod run;
pub mod status;

use std::path::{Path, PathBuf};

use anyhow::Result;
use nuketown_town::{Town, TownError};

/// Which town file to read: the subcommand's argument, `--town`/`NUKETOWN_TOWN`,
/// then `/etc/nuketown/town.json`, then `/etc/nuketown/town.toml`.
pub fn town_path(positional: Option<&Path>, global: Option<&Path>) -> Result<PathBuf> {
    positional
        .or(global)
        .map(Path::to_path_buf)
        .or_else(nuketown_town::default_town_path)
        .ok_or_else(|| TownError::NotFound.into())
}

/// The error of a subcommand this binary was built without (a cargo
/// feature left out to build the core CLI fast).
#[allow(dead_code)]
pub fn without_feature(feature: &str, what: &str) -> String {
    format!(
        "this nuketown was built without {what} (cargo feature `{feature}`); build it with default features: cargo build --release"
    )
}

/// Load and validate the town named by the arguments.
pub fn load_town(positional: Option<&Path>, global: Option<&Path>) -> Result<Town> {
    let path = town_path(positional, global)?;
    Ok(nuketown_town::load(&path)?)
}

/// The privilege path (sudoers drop-in, sudo shim, entry point) rendered by the town hall.
pub fn privileged(town: &Town) -> Option<nuketown_host::Privileged> {
    // The entry point and the compiled shim are built next to this binary.
    let beside = |name: &str| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join(name)))
            .filter(|p| p.is_file())
    };
    Some(nuketown_host::Privileged {
        sudoers: nuketown_hall::sudoers::render(town),
        human_grant: nuketown_hall::sudoers::human_grant(town),
        shim_binary: beside("nuketown-sudo"),
        elevate_binary: beside("nuketown-elevate"),
    })
}

/// How apply/plan change this host: prune flags, the privilege path, the
/// binary and the system units.
pub fn options(
    town: &Town,
    paths: &nuketown_host::HostPaths,
    prune: bool,
    purge: bool,
) -> nuketown_host::Options {
    let running = std::env::current_exe().ok();
    let installed = running.as_deref().map(|r| paths.installed_binary(r));
    let mut units = Vec::new();
    let mut retired_units = Vec::new();
    if let Some(bin) = &installed {
        units.push(nuketown_host::Unit {
            name: "nuketown-reset.service".into(),
            text: nuketown_host::render::reset_unit(bin),
            wanted_by: Some("multi-user.target".into()),
            instances: Vec::new(),
        });
        for (name, text, target) in [
            (
                "nuketown-hall.service",
                nuketown_hall::units::hall_service(bin),
                "multi-user.target",
            ),
            (
                "nuketown-hall.socket",
                nuketown_hall::units::hall_socket(),
                "sockets.target",
            ),
            (
                "nuketown-approvers.socket",
                nuketown_hall::units::approvers_socket(),
                "sockets.target",
            ),
        ] {
            units.push(nuketown_host::Unit {
                name: name.into(),
                text,
                wanted_by: Some(target.into()),
                instances: Vec::new(),
            });
        }
        units.push(nuketown_host::Unit {
            name: "nuketown-chat@.service".into(),
            text: nuketown_host::render::chat_unit(bin),
            wanted_by: Some("multi-user.target".into()),
            instances: town
                .host_agents()
                .filter(|(_, a)| a.chat.enable)
                .map(|(n, _)| n.clone())
                .collect(),
        });
        // The rooms keeper runs only while the town declares rooms.
        let password = town.hall.matrix.password_file.clone().unwrap_or_default();
        let rooms = nuketown_host::Unit {
            name: "nuketown-rooms.service".into(),
            text: nuketown_host::render::rooms_unit(bin, &password),
            wanted_by: Some("multi-user.target".into()),
            instances: Vec::new(),
        };
        if town.rooms.is_empty() {
            retired_units.push(rooms);
        } else {
            units.push(rooms);
        }
    }
    nuketown_host::Options {
        prune,
        purge,
        privileged: privileged(town),
        binary: running,
        units,
        retired_units,
    }
}
