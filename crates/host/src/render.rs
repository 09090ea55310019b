//! Pure renderers for the host files apply writes: udev rules and the
//! agent's shell start-up files.

use std::fmt::Write as _;
use std::path::Path;

use nuketown_town::Town;

/// Where apply finds `setfacl` for udev's RUN (udev wants an absolute path).
pub const SETFACL: &str = "/usr/bin/setfacl";

/// `70-nuketown.rules`: one rule per declared device, giving the agent an ACL
/// on the device node when it appears. `usb` devices match their own
/// attributes (`ATTR`); others (`tty`, `hidraw`, …) match a parent's (`ATTRS`).
pub fn udev_rules(town: &Town, setfacl: &str) -> String {
    let mut s = String::from("# Written by nuketown from the town declaration; do not edit.\n");
    for (name, agent) in town.host_agents() {
        for (i, dev) in agent.devices.iter().enumerate() {
            let attr = if dev.subsystem == "usb" {
                "ATTR"
            } else {
                "ATTRS"
            };
            let _ = writeln!(s, "\n# {name}: devices[{i}]");
            let _ = write!(
                s,
                "SUBSYSTEM==\"{}\", ACTION==\"{}\"",
                dev.subsystem, dev.action
            );
            for (k, v) in &dev.attrs {
                let _ = write!(s, ", {attr}{{{k}}}==\"{v}\"");
            }
            let _ = writeln!(
                s,
                ", RUN+=\"{setfacl} -m u:{name}:{} $env{{DEVNAME}}\"",
                dev.permission
            );
        }
    }
    s
}

/// The exact command a device rule runs for `agent` on `devnode`.
pub fn acl_command(setfacl: &str, agent: &str, permission: &str, devnode: &Path) -> Vec<String> {
    vec![
        setfacl.to_string(),
        "-m".to_string(),
        format!("u:{agent}:{permission}"),
        devnode.display().to_string(),
    ]
}

/// `~/.profile`: login shells read `~/.bashrc` too.
pub fn profile() -> String {
    format!(
        "# Written by nuketown; rewritten every round.\n\
         # The agent's keys are the town's: ssh, git push and git signing use them through this socket.\n\
         SSH_AUTH_SOCK={}/$(id -un)/agent.sock; export SSH_AUTH_SOCK\n\
         [ -n \"$BASH_VERSION\" ] && [ -f \"$HOME/.bashrc\" ] && . \"$HOME/.bashrc\"\n",
        nuketown_keys::agent::SOCKET_DIR
    )
}

/// The lines of `~/.profile` and `~/.bashrc` that point the agent's tools
/// at the town's credential gateway (`Town::gateway_env`): base URLs,
/// placeholder keys the gateway replaces, its HTTPS proxy and CA. Empty
/// without credentials.
pub fn gateway_exports(env: &[(String, String)]) -> String {
    if env.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "# The agent's API keys and tokens are the town's: its tools reach them through the gateway, which adds them.\n",
    );
    for (k, v) in env {
        let _ = writeln!(s, "export {k}={}", nuketown_town::display::sh_quote(v));
    }
    s
}

/// `~/.bashrc`: who the shell belongs to, and (with sudo) the `sudo` shim
/// first on PATH (`shim` = the shim's directory and the entry point). In
/// bash, and the bash commands it starts, `sudo` is also a function that
/// calls the real sudo on the entry point at once: one exec fewer than the
/// shim. Neither is a boundary — sudoers lets the agent run the entry point
/// and nothing else.
pub fn bashrc(agent: &str, shim: Option<(&Path, &Path)>) -> String {
    let mut s = String::from("# Written by nuketown; rewritten every round.\n");
    let _ = writeln!(s, "export NUKETOWN_AGENT={agent}");
    let _ = writeln!(
        s,
        "# The agent's keys are the town's: ssh, git push and git signing use them through this socket.\nexport SSH_AUTH_SOCK={}",
        nuketown_keys::agent::socket_path(std::path::Path::new(nuketown_keys::agent::SOCKET_DIR), agent).display()
    );
    if let Some((dir, elevate)) = shim {
        let d = dir.display();
        let e = nuketown_town::display::sh_quote(&elevate.to_string_lossy());
        let _ = writeln!(
            s,
            "# sudo asks the town hall: a human approves each exact command.\ncase \":$PATH:\" in *\":{d}:\"*) ;; *) PATH=\"{d}:$PATH\" ;; esac\nexport PATH\n\
             sudo() {{ if [ -x /run/wrappers/bin/sudo ]; then /run/wrappers/bin/sudo {e} \"$@\"; else /usr/bin/sudo {e} \"$@\"; fi; }}\n\
             export -f sudo"
        );
    }
    s
}

/// `nuketown-reset.service`: a new round for every agent at boot, before
/// agent services and the town hall start.
pub fn reset_unit(nuketown: &Path) -> String {
    format!(
        "# Written by nuketown apply.\n[Unit]\nDescription=Nuketown: a new round for every agent\n\
DefaultDependencies=no\nRequires=local-fs.target\nAfter=local-fs.target systemd-sysusers.service\n\
Before=multi-user.target nuketown-hall.service\nConditionPathExists=/etc/nuketown/town.json\n\n\
[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={} reset --all --town /etc/nuketown/town.json\n\n\
[Install]\nWantedBy=multi-user.target\n",
        nuketown.display()
    )
}

/// `nuketown-rooms.service`: the town's declared rooms kept as declared by
/// the hall's Matrix account (`nuketown rooms --watch`). Not as root: as a
/// user systemd makes for the service alone (`DynamicUser`), which owns
/// only its state directory (the account's device) and reads the account's
/// password as a credential systemd hands it (`password_file`, read by
/// systemd as root). It talks to a homeserver; nothing it parses runs with
/// more than that.
pub fn rooms_unit(nuketown: &Path, password_file: &Path) -> String {
    format!(
        "# Written by nuketown apply.\n[Unit]\nDescription=Nuketown: the town's Matrix rooms, kept as declared\n\
Wants=network-online.target\nAfter=network-online.target\n\n\
[Service]\nExecStart={} rooms --watch --town /etc/nuketown/town.json --store /var/lib/nuketown-rooms --password-file %d/hall-matrix\n\
DynamicUser=yes\nLoadCredential=hall-matrix:{}\n\
StateDirectory=nuketown-rooms\nStateDirectoryMode=0700\nRestart=always\nRestartSec=10\n\
NoNewPrivileges=yes\nPrivateTmp=yes\nProtectSystem=strict\nProtectHome=yes\n\
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\nCapabilityBoundingSet=\n\n\
[Install]\nWantedBy=multi-user.target\n",
        unit_escape(&nuketown.display().to_string()),
        unit_escape(&password_file.display().to_string())
    )
}

/// A value as systemd reads it back: `%` is a specifier, so it is doubled.
fn unit_escape(s: &str) -> String {
    s.replace('%', "%%")
}

/// `nuketown-chat@.service`: an agent's Matrix bridge, run as the agent.
/// No `NoNewPrivileges`: the CLI it runs asks for root the town's way,
/// `sudo` (the shim, first on its PATH) to the hall, which a human decides.
pub fn chat_unit(nuketown: &Path) -> String {
    format!(
        "# Written by nuketown apply.\n[Unit]\nDescription=Nuketown: %i's Matrix bridge\n\
Wants=network-online.target\nAfter=network-online.target nuketown-reset.service\n\n\
[Service]\nUser=%i\nExecStart={} chat %i --town /etc/nuketown/town.json\nRestart=always\nRestartSec=5\n\
PrivateTmp=yes\n\n[Install]\nWantedBy=multi-user.target\n",
        nuketown.display()
    )
}
