//! Files the privilege path needs, rendered from the town: the sudoers
//! drop-in, the agent's `sudo` shim, and the hall's systemd units.

use std::fmt::Write as _;
use std::path::Path;

use nuketown_town::Town;

/// `/etc/sudoers.d/nuketown`: each agent with `sudo.enable` may run exactly
/// the entry point, as root, without a password; never SETENV, env reset.
pub fn sudoers(town: &Town) -> String {
    let elevate = town.hall.elevate_path.display().to_string();
    let mut s = String::from("# Written by nuketown apply. Agents reach root only through the town hall:\n# each may run exactly the entry point, which asks a human.\n");
    let _ = writeln!(s, "Defaults!{elevate} env_reset, !setenv");
    for (name, agent) in town.enabled_agents() {
        if agent.sudo.enable {
            let _ = writeln!(s, "{name} ALL=(root) NOPASSWD: NOSETENV: {elevate}");
        }
    }
    s
}

/// Quote for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The agent's `sudo`: everything goes to the entry point through real sudo.
pub fn shim(elevate: &Path) -> String {
    format!(
        "#!/bin/sh\n# Written by nuketown apply: sudo asks the town hall; a human approves the exact command.\nexec /usr/bin/sudo {} \"$@\"\n",
        sh_quote(&elevate.display().to_string())
    )
}

/// `nuketown-hall.service`.
pub fn hall_service(nuketown: &Path) -> String {
    format!(
        "# Written by nuketown apply.\n[Unit]\nDescription=Nuketown town hall: human approval of agent escalations\nAfter=nuketown-reset.service\n\n\
[Service]\nType=notify\nExecStart={} hall\nRuntimeDirectory=nuketown\nRuntimeDirectoryPreserve=yes\nStateDirectory=nuketown\nRestart=on-failure\n\n\
[Install]\nWantedBy=multi-user.target\n",
        nuketown.display()
    )
}

/// `nuketown-hall.socket` (the requester socket, root only).
pub fn hall_socket() -> String {
    "# Written by nuketown apply.\n[Unit]\nDescription=Nuketown town hall: requester socket\n\n[Socket]\nListenStream=/run/nuketown/hall.sock\nSocketMode=0600\nFileDescriptorName=requester\nService=nuketown-hall.service\n\n[Install]\nWantedBy=sockets.target\n".to_string()
}

/// `nuketown-approvers.socket` (the approver socket, group nuketown-approvers).
pub fn approvers_socket() -> String {
    "# Written by nuketown apply.\n[Unit]\nDescription=Nuketown town hall: approver socket\n\n[Socket]\nListenStream=/run/nuketown/approvers.sock\nSocketMode=0660\nSocketGroup=nuketown-approvers\nFileDescriptorName=approvers\nService=nuketown-hall.service\n\n[Install]\nWantedBy=sockets.target\n".to_string()
}

/// `nuketown-approver.service`, a user unit for the human's desktop session.
pub fn desktop_approver_service(nuketown: &Path) -> String {
    format!(
        "# The human's desktop approver: a dialog for each request.\n[Unit]\nDescription=Nuketown desktop approver\nPartOf=graphical-session.target\nAfter=graphical-session.target\n\n\
[Service]\nExecStart={} approvals desktop\nRestart=on-failure\nRestartSec=2\n\n[Install]\nWantedBy=graphical-session.target\n",
        nuketown.display()
    )
}
