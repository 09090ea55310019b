//! Who the hall trusts with what root runs: root, and the host's system
//! accounts that are nobody else's. Everything else — the town's agents
//! (enabled or not, still on the host or only in apply's records), its
//! humans, every other account, every uid with no account, every
//! subordinate id (a user maps those with `newuidmap` and owns files as
//! them) — is untrusted. A rule decides only what [`crate::proof`] shows is
//! beyond every untrusted user; this module says who that is.
//!
//! It is built from the files that say it, never from a list of who might
//! be dangerous: `/etc/login.defs` (`UID_MIN`, `GID_MIN`), `/etc/passwd`,
//! `/etc/group`, `/etc/subuid`, `/etc/subgid`. A group is trusted only when
//! it is a system group, no subordinate id, and every member — listed or by
//! primary group — is trusted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The files a [`Trust`] is read from (overridable for tests).
#[derive(Debug, Clone)]
pub struct Sources {
    /// `/etc/login.defs`.
    pub login_defs: PathBuf,
    /// `/etc/passwd`.
    pub passwd: PathBuf,
    /// `/etc/group`.
    pub group: PathBuf,
    /// `/etc/subuid`.
    pub subuid: PathBuf,
    /// `/etc/subgid`.
    pub subgid: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            login_defs: "/etc/login.defs".into(),
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
        }
    }
}

impl Sources {
    /// Every file, for noticing a change.
    pub fn all(&self) -> [&Path; 5] {
        [
            &self.login_defs,
            &self.passwd,
            &self.group,
            &self.subuid,
            &self.subgid,
        ]
    }
}

/// A range of subordinate ids and whose they are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubRange {
    owner: String,
    first: u64,
    count: u64,
}

fn in_ranges(ranges: &[SubRange], id: u32) -> Option<&str> {
    let id = u64::from(id);
    ranges
        .iter()
        .find(|r| id >= r.first && id < r.first.saturating_add(r.count))
        .map(|r| r.owner.as_str())
}

/// Who may own, and write, what root runs without a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    users: BTreeSet<u32>,
    groups: BTreeSet<u32>,
    /// Names for the reasons given: every account the files list.
    user_names: BTreeMap<u32, String>,
    group_names: BTreeMap<u32, String>,
    /// The town's users (agents, humans, and agents apply made and still
    /// knows of), for saying so.
    town: BTreeSet<u32>,
    subuids: Vec<SubRange>,
    subgids: Vec<SubRange>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn login_def(text: &str, key: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(key))
            .then(|| w.next()?.parse().ok())
            .flatten()
    })
}

fn sub_ranges(text: &str, names: &BTreeMap<u32, String>) -> Vec<SubRange> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let owner = f.next()?.to_string();
            let first = f.next()?.trim().parse().ok()?;
            let count = f.next()?.trim().parse().ok()?;
            // An owner written as a uid is named by its account.
            let owner = owner
                .parse::<u32>()
                .ok()
                .and_then(|u| names.get(&u).cloned())
                .unwrap_or(owner);
            Some(SubRange {
                owner,
                first,
                count,
            })
        })
        .collect()
}

impl Trust {
    /// Read the host's accounts from `src`. `town_users` are the uids the
    /// town declares or apply made (agents enabled or not, humans): never
    /// trusted, whatever their number.
    pub fn read(src: &Sources, town_users: impl IntoIterator<Item = u32>) -> Trust {
        let defs = read(&src.login_defs);
        let uid_min = login_def(&defs, "UID_MIN").unwrap_or(1000);
        let gid_min = login_def(&defs, "GID_MIN").unwrap_or(1000);
        let town: BTreeSet<u32> = town_users.into_iter().collect();

        // name:x:uid:gid:…
        let mut user_names = BTreeMap::new();
        let mut primary: Vec<(u32, u32)> = Vec::new();
        for l in read(&src.passwd).lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                continue;
            }
            if let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) {
                user_names.entry(uid).or_insert_with(|| f[0].to_string());
                primary.push((uid, gid));
            }
        }
        let by_name: BTreeMap<&str, u32> =
            user_names.iter().map(|(u, n)| (n.as_str(), *u)).collect();
        let subuids = sub_ranges(&read(&src.subuid), &user_names);
        let subgids = sub_ranges(&read(&src.subgid), &user_names);

        let users: BTreeSet<u32> = user_names
            .keys()
            .copied()
            .filter(|&u| {
                u == 0 || (u < uid_min && !town.contains(&u) && in_ranges(&subuids, u).is_none())
            })
            .chain(std::iter::once(0))
            .collect();

        // name:x:gid:member,member
        let mut group_names = BTreeMap::new();
        let mut groups = BTreeSet::new();
        let town_gids: BTreeSet<u32> = primary
            .iter()
            .filter(|(u, _)| town.contains(u))
            .map(|(_, g)| *g)
            .collect();
        for l in read(&src.group).lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                continue;
            }
            let Ok(gid) = f[2].parse::<u32>() else {
                continue;
            };
            group_names.entry(gid).or_insert_with(|| f[0].to_string());
            let members_trusted = f.get(3).is_none_or(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .all(|m| by_name.get(m).is_some_and(|u| users.contains(u)))
            }) && primary
                .iter()
                .filter(|(_, g)| *g == gid)
                .all(|(u, _)| users.contains(u));
            let system = gid == 0
                || (gid < gid_min
                    && !town_gids.contains(&gid)
                    && in_ranges(&subgids, gid).is_none());
            if system && members_trusted {
                groups.insert(gid);
            }
        }
        Trust {
            users,
            groups,
            user_names,
            group_names,
            town,
            subuids,
            subgids,
        }
    }

    /// Trust these users too (the mock file may be an approver's).
    pub fn with_users(mut self, uids: impl IntoIterator<Item = u32>) -> Trust {
        self.users.extend(uids);
        self
    }

    /// Whether files owned by `uid` may be root's for the proof.
    pub fn user(&self, uid: u32) -> bool {
        self.users.contains(&uid)
    }

    /// Whether write access for group `gid` is write access for trusted users only.
    pub fn group(&self, gid: u32) -> bool {
        self.groups.contains(&gid)
    }

    /// The user `uid`, in words, with why it is not trusted.
    pub fn who(&self, uid: u32) -> String {
        if let Some(owner) = in_ranges(&self.subuids, uid) {
            return format!("uid {uid} (one of {owner}'s subordinate ids)");
        }
        match self.user_names.get(&uid) {
            Some(n) if self.town.contains(&uid) => format!("{n} (uid {uid}, of the town)"),
            Some(n) if self.user(uid) => format!("{n} (uid {uid})"),
            Some(n) => format!("{n} (uid {uid}, not a system account)"),
            None => format!("uid {uid} (no account of this host)"),
        }
    }

    /// The group `gid`, in words.
    pub fn group_who(&self, gid: u32) -> String {
        if let Some(owner) = in_ranges(&self.subgids, gid) {
            return format!("gid {gid} (one of {owner}'s subordinate ids)");
        }
        match self.group_names.get(&gid) {
            Some(n) => format!("group {n} (gid {gid})"),
            None => format!("gid {gid} (no group of this host)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path, passwd: &str, group: &str, subuid: &str) -> Sources {
        let w = |n: &str, t: &str| {
            let p = dir.join(n);
            std::fs::write(&p, t).unwrap();
            p
        };
        Sources {
            login_defs: w("login.defs", "UID_MIN 1000\nGID_MIN\t1000\n"),
            passwd: w("passwd", passwd),
            group: w("group", group),
            subuid: w("subuid", subuid),
            subgid: w("subgid", subuid),
        }
    }

    #[test]
    fn root_and_system_accounts_only() {
        let d = tempfile::tempdir().unwrap();
        let src = sources(
            d.path(),
            "root:x:0:0::/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\nmessagebus:x:100:101::/:/bin/false\nada:x:1100:1100::/agents/ada:/bin/sh\nold:x:900:900::/:/bin/sh\njosh:x:1000:1000::/home/josh:/bin/sh\n",
            "root:x:0:\ndaemon:x:1:\nmessagebus:x:101:\nada:x:1100:\nold:x:900:\njosh:x:1000:\nadm:x:4:josh\nstaff:x:50:\nusers:x:100:\nbad:x:60:nobodyhere\n",
            "ada:100000:65536\n",
        );
        // old (uid 900) is a town user: untrusted despite its number.
        let t = Trust::read(&src, [1100, 900]);
        assert!(t.user(0) && t.user(1) && t.user(100));
        assert!(!t.user(1100) && !t.user(900) && !t.user(1000));
        assert!(!t.user(100_000) && !t.user(4242));
        assert!(t.who(100_005).contains("ada's subordinate ids"));
        assert!(t.who(900).contains("of the town"));
        assert!(t.who(4242).contains("no account"));
        assert!(t.group(0) && t.group(1) && t.group(50) && t.group(100));
        // A group with a human in it, a town user's group, an unknown member.
        assert!(!t.group(4) && !t.group(900) && !t.group(60));
        assert!(!t.group(1000) && !t.group(100_000));
    }
}
