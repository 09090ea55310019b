//! Installing a sudoers drop-in without ever breaking sudo.
//!
//! A drop-in that is valid alone can still make the host's whole sudoers
//! configuration invalid (an alias another drop-in defines too, say) —
//! and then every `sudo` on the host fails, which on a host reached only
//! through sudo is a lock-out. So the candidate is checked twice before it
//! moves in: alone (`visudo -cf`), and as part of the whole configuration —
//! a private copy of the main sudoers file whose `@includedir`/`#includedir`
//! of the drop-in's directory (and `@include` of the drop-in itself) point
//! at a copy of that directory with the candidate in the drop-in's place,
//! checked with `visudo -c -f`. Only then is it renamed into place.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::safe::Tree;
use crate::system::run;
use crate::HostError;
use std::ffi::OsStr;

/// The main sudoers file.
pub const MAIN: &str = "/etc/sudoers";

/// Whether sudo reads a file of this name from an included directory:
/// not ending in `~`, no `.` in it.
fn read_by_includedir(name: &str) -> bool {
    !name.ends_with('~') && !name.contains('.')
}

/// An include directive of a sudoers line: (is a directory, the path as written).
fn include_of(line: &str) -> Option<(bool, &str)> {
    let t = line.trim_start();
    for (prefix, dir) in [
        ("@includedir", true),
        ("#includedir", true),
        ("@include", false),
        ("#include", false),
    ] {
        if let Some(rest) = t.strip_prefix(prefix) {
            if rest.starts_with([' ', '\t']) {
                let p = rest.trim();
                return Some((dir, p.trim_matches('"')));
            }
        }
    }
    None
}

/// Check `text` as the drop-in at `path` against the whole configuration
/// rooted at `main`. `Err` carries what visudo said.
pub fn check_whole(main: &Path, path: &Path, text: &str) -> Result<(), String> {
    let dropin_dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the drop-in has no file name")?;
    let main_text = fs::read_to_string(main).map_err(|e| format!("{}: {e}", main.display()))?;
    let main_dir = main.parent().unwrap_or(Path::new("/"));
    let tmp = nix::unistd::mkdtemp("/tmp/nuketown-sudoers.XXXXXX")
        .map_err(|e| format!("a private directory for the check: {e}"))?;
    let result = (|| {
        let copy_dir = tmp.join("d");
        fs::create_dir(&copy_dir).map_err(|e| e.to_string())?;
        let write = |p: &Path, t: &[u8]| -> Result<(), String> {
            fs::write(p, t).map_err(|e| format!("{}: {e}", p.display()))?;
            fs::set_permissions(p, fs::Permissions::from_mode(0o440)).map_err(|e| e.to_string())
        };
        if let Ok(entries) = fs::read_dir(dropin_dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n != name && read_by_includedir(&n) && e.path().is_file() {
                    let bytes = fs::read(e.path()).map_err(|e| e.to_string())?;
                    write(&copy_dir.join(&n), &bytes)?;
                }
            }
        }
        write(&copy_dir.join(name), text.as_bytes())?;
        let mut out = String::new();
        for line in main_text.lines() {
            match include_of(line) {
                Some((is_dir, p)) => {
                    let resolved: PathBuf = if p.starts_with('/') {
                        PathBuf::from(p)
                    } else {
                        main_dir.join(p)
                    };
                    let directive = if is_dir { "@includedir" } else { "@include" };
                    let target = if is_dir && resolved == dropin_dir {
                        copy_dir.clone()
                    } else if !is_dir && resolved == path {
                        copy_dir.join(name)
                    } else {
                        resolved
                    };
                    out.push_str(&format!("{directive} \"{}\"\n", target.display()));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        let main_copy = tmp.join("sudoers");
        write(&main_copy, out.as_bytes())?;
        run(
            "visudo",
            [OsStr::new("-c"), OsStr::new("-f"), main_copy.as_os_str()],
        )
        .map(|_| ())
        .map_err(|e| e.to_string().replace(&tmp.display().to_string(), "…"))
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Install `text` as the drop-in `path`: refused, with nothing changed,
/// unless it passes visudo alone and as part of the whole configuration
/// rooted at `main`; then written beside it and renamed into place.
pub fn install(main: &Path, path: &Path, text: &str) -> Result<(), HostError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(HostError::io(dir))?;
    let tree = Tree::open(dir)?;
    // A dot in the name: sudo never reads it while it is checked.
    let check = format!(".nuketown-check-{}", std::process::id());
    tree.write(Path::new(&check), text.as_bytes(), 0o440, 0, 0)?;
    let verdict = run("visudo", [OsStr::new("-cf"), dir.join(&check).as_os_str()])
        .map(|_| ())
        .map_err(|e| format!("the drop-in alone failed visudo: {e}"))
        .and_then(|()| {
            if main.exists() {
                check_whole(main, path, text).map_err(|e| {
                    format!("with it in place, the host's sudoers configuration would be invalid and every sudo would fail: {e}")
                })
            } else {
                Ok(())
            }
        });
    if let Err(e) = verdict {
        let _ = tree.remove(Path::new(&check));
        return Err(HostError::Conflict(format!(
            "the sudoers drop-in {} was not installed, and sudo is unchanged: {e}",
            path.display()
        )));
    }
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    tree.rename(Path::new(&check), &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_directives_are_read_in_every_spelling() {
        assert_eq!(
            include_of("@includedir /etc/sudoers.d"),
            Some((true, "/etc/sudoers.d"))
        );
        assert_eq!(
            include_of("#includedir /etc/sudoers.d"),
            Some((true, "/etc/sudoers.d"))
        );
        assert_eq!(
            include_of("@include \"sudoers.local\""),
            Some((false, "sudoers.local"))
        );
        assert_eq!(include_of("# includedir is a comment"), None);
        assert_eq!(include_of("#includedirx /x"), None);
        assert!(
            read_by_includedir("nuketown")
                && !read_by_includedir("a.b")
                && !read_by_includedir("a~")
        );
    }
}
