//! Declared devices as they are now: which are plugged in (read from sysfs the
//! way udev matches them) and whether the agent's ACL is on the node.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use nuketown_town::{Device, Town};

/// One declared device and the nodes that match it now.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// The agent.
    pub agent: String,
    /// Index in the agent's `devices`.
    pub index: usize,
    /// udev subsystem.
    pub subsystem: String,
    /// `key=value` attributes.
    pub attrs: String,
    /// Declared permission.
    pub permission: String,
    /// Matching devices present now.
    pub present: Vec<Node>,
}

/// A present device.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Its sysfs path.
    pub syspath: PathBuf,
    /// Its device node, if it has one.
    pub devnode: Option<PathBuf>,
    /// Whether the agent's ACL with the declared permission is on the node.
    pub acl: bool,
}

/// Devices of `subsystem` in sysfs (class and bus views), canonical paths.
fn scan(subsystem: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in [
        format!("/sys/class/{subsystem}"),
        format!("/sys/bus/{subsystem}/devices"),
    ] {
        if let Ok(dir) = fs::read_dir(&base) {
            for e in dir.flatten() {
                if let Ok(p) = fs::canonicalize(e.path()) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn attr(dir: &Path, key: &str) -> Option<String> {
    fs::read_to_string(dir.join(key))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Whether the device matches: `usb` on its own attributes (udev's ATTR),
/// others on the device or one parent holding all attributes (ATTRS).
pub fn matches(syspath: &Path, dev: &Device) -> bool {
    let all = |d: &Path| {
        dev.attrs
            .iter()
            .all(|(k, v)| attr(d, k).as_deref() == Some(v.as_str()))
    };
    if dev.subsystem == "usb" {
        return all(syspath);
    }
    syspath
        .ancestors()
        .take_while(|a| a.starts_with("/sys/devices"))
        .any(all)
}

/// The device node of a sysfs device, from its uevent (a name below `/dev`).
pub fn devnode(syspath: &Path) -> Option<PathBuf> {
    let uevent = fs::read_to_string(syspath.join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| {
            let p = Path::new(n);
            p.is_relative()
                && p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        })
        .map(|n| Path::new("/dev").join(n))
}

/// Whether `path` is a character or block device itself (not a link to
/// one): the only thing apply gives an agent an ACL on.
pub fn is_device_node(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::symlink_metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_char_device() || t.is_block_device()
    })
}

/// Whether `node` carries an ACL entry giving `agent` at least `permission`.
pub fn has_acl(node: &Path, agent: &str, permission: &str) -> bool {
    let Ok(out) = Command::new("getfacl")
        .args(["-cp", "-n"])
        .arg(node)
        .output()
    else {
        return false;
    };
    let uid = crate::system::user(agent).map(|a| a.uid.to_string());
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().any(|l| {
        let mut f = l.splitn(3, ':');
        let (Some("user"), Some(who), Some(perm)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        let perm = perm.split_whitespace().next().unwrap_or("");
        (who == agent || Some(who.to_string()) == uid)
            && permission.chars().all(|c| perm.contains(c))
    })
}

/// Every declared device with what is present now.
pub fn devices(town: &Town) -> Vec<DeviceStatus> {
    let mut out = Vec::new();
    for (name, agent) in town.host_agents() {
        for (i, dev) in agent.devices.iter().enumerate() {
            let present = scan(&dev.subsystem)
                .into_iter()
                .filter(|p| matches(p, dev))
                .map(|syspath| {
                    let devnode = devnode(&syspath);
                    let acl = devnode
                        .as_deref()
                        .is_some_and(|n| has_acl(n, name, &dev.permission));
                    Node {
                        syspath,
                        devnode,
                        acl,
                    }
                })
                .collect();
            out.push(DeviceStatus {
                agent: name.clone(),
                index: i,
                subsystem: dev.subsystem.clone(),
                attrs: dev
                    .attrs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                permission: dev.permission.clone(),
                present,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_stay_below_dev() {
        let d = tempfile::tempdir().unwrap();
        for (name, want) in [
            ("ttyACM0", Some("/dev/ttyACM0")),
            ("bus/usb/001/002", Some("/dev/bus/usb/001/002")),
            ("../etc/shadow", None),
            ("/etc/shadow", None),
            ("bus/../../etc", None),
        ] {
            std::fs::write(
                d.path().join("uevent"),
                format!("MAJOR=1\nDEVNAME={name}\n"),
            )
            .unwrap();
            assert_eq!(devnode(d.path()).as_deref(), want.map(Path::new), "{name}");
        }
        assert!(is_device_node(Path::new("/dev/null")));
        assert!(!is_device_node(d.path()));
        std::os::unix::fs::symlink("/dev/null", d.path().join("link")).unwrap();
        assert!(
            !is_device_node(&d.path().join("link")),
            "a link to a device is not one"
        );
    }
}
