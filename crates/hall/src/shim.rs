//! The agent's `sudo`: a shim first on its PATH that hands everything to the
//! entry point through the real sudo, so `sudo -u USER CMD` keeps working and
//! still asks a human.

use std::path::Path;

/// Quote for a POSIX shell: one word, whatever it holds.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shim script for the entry point at `elevate_path`.
pub fn render(elevate_path: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by nuketown apply: sudo asks the town hall, and a human approves\n\
         # the exact command. Only the entry point may run as root.\n\
         exec /usr/bin/sudo {} \"$@\"\n",
        sh_quote(&elevate_path.to_string_lossy())
    )
}
