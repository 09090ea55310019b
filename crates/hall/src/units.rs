//! The hall's systemd units: the service, its two sockets (socket activation),
//! and the human's desktop approver (a user unit).

use std::path::Path;

/// A path as one systemd command-line word: `%` doubled, quoted when it holds
/// spaces, quotes or backslashes.
fn exec_word(path: &Path) -> String {
    let s = path.to_string_lossy().replace('%', "%%");
    if s.contains([' ', '"', '\\', '\'']) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// `nuketown-hall.service`, running `<nuketown> hall` as root.
pub fn hall_service(nuketown: &Path) -> String {
    format!(
        "# Written by nuketown apply.\n\
[Unit]\n\
Description=Nuketown town hall: human approval of agents' privilege escalations\n\
Documentation=https://github.com/nuketown/nuketown/blob/main/docs/protocol.md\n\
Requires=nuketown-hall.socket nuketown-approvers.socket\n\
After=nuketown-hall.socket nuketown-approvers.socket nuketown-reset.service\n\
\n\
[Service]\n\
Type=notify\n\
Environment=NUKETOWN_LOG=info\n\
ExecStart={} hall\n\
Sockets=nuketown-hall.socket nuketown-approvers.socket\n\
StateDirectory=nuketown\n\
Restart=on-failure\n\
NoNewPrivileges=yes\n\
PrivateTmp=yes\n\
ProtectSystem=strict\n\
ProtectHome=read-only\n\
ReadWritePaths=-/run/nuketown\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        exec_word(nuketown)
    )
}

/// `nuketown-hall.socket`: the requester socket, root only.
pub fn hall_socket() -> String {
    format!(
        "# Written by nuketown apply.\n\
[Unit]\n\
Description=Nuketown town hall: requester socket (root only)\n\
\n\
[Socket]\n\
ListenStream={}\n\
SocketUser=root\n\
SocketGroup=root\n\
SocketMode=0600\n\
DirectoryMode=0755\n\
FileDescriptorName=requester\n\
Service=nuketown-hall.service\n\
\n\
[Install]\n\
WantedBy=sockets.target\n",
        crate::REQUESTER_SOCKET
    )
}

/// `nuketown-approvers.socket`: the approver socket, group `nuketown-approvers`.
pub fn approvers_socket() -> String {
    format!(
        "# Written by nuketown apply.\n\
[Unit]\n\
Description=Nuketown town hall: approver socket (group {group})\n\
\n\
[Socket]\n\
ListenStream={}\n\
SocketUser=root\n\
SocketGroup={group}\n\
SocketMode=0660\n\
DirectoryMode=0755\n\
FileDescriptorName=approvers\n\
Service=nuketown-hall.service\n\
\n\
[Install]\n\
WantedBy=sockets.target\n",
        crate::APPROVER_SOCKET,
        group = crate::APPROVERS_GROUP
    )
}

/// `nuketown-approver.service`, a user unit: a dialog in the human's
/// graphical session for each request.
pub fn desktop_approver_service(nuketown: &Path) -> String {
    format!(
        "# The human's desktop approver: a dialog for each privilege request.\n\
[Unit]\n\
Description=Nuketown desktop approver\n\
PartOf=graphical-session.target\n\
After=graphical-session.target\n\
\n\
[Service]\n\
ExecStart={} approvals desktop\n\
Restart=on-failure\n\
RestartSec=2\n\
\n\
[Install]\n\
WantedBy=graphical-session.target\n",
        exec_word(nuketown)
    )
}
