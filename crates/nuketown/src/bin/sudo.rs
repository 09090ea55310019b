//! `nuketown-sudo`: an agent's `sudo`, installed as `sudo` first on its PATH.
//! The entry point is found beside this binary's real location: in the same
//! directory (a package's `bin/`, the shim being a link named `sudo`) or one
//! up (`nuketown apply`'s `<libexec>/bin/sudo` and `<libexec>/nuketown-elevate`).
//! It hands every argument, untouched, to the entry point through the real
//! sudo — one exec, no shell — so `sudo -u USER CMD` keeps working and still
//! asks the town hall. It is a convenience, not a boundary: sudoers lets the
//! agent run the entry point and nothing else, whatever it types.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Where the real sudo may be: NixOS's setuid wrapper first.
const SUDO: &[&str] = &["/run/wrappers/bin/sudo", "/usr/bin/sudo", "/bin/sudo"];

fn main() -> ExitCode {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let Some(elevate) = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("nuketown-elevate"))
        .find(|p| p.is_file())
    else {
        eprintln!("nuketown: the entry point nuketown-elevate is not installed beside this sudo (run nuketown apply)");
        return ExitCode::from(1);
    };
    let Some(sudo) = SUDO.iter().map(PathBuf::from).find(|p| p.is_file()) else {
        eprintln!(
            "nuketown: sudo is not installed (looked for {})",
            SUDO.join(", ")
        );
        return ExitCode::from(1);
    };
    let e = Command::new(&sudo)
        .arg(&elevate)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("nuketown: cannot run {}: {e}", sudo.display());
    ExitCode::from(127)
}
