//! The town as the hall last read it: the declaration, its approvers, and
//! who is trusted with what root runs ([`crate::trust`]). A leaf: the
//! policies and the hall both read it.

use std::path::Path;

use nuketown_town::Town;

use crate::trust::Trust;

/// The town as last read, with its approvers' uids and who is trusted.
pub struct Loaded {
    /// The town.
    pub town: Town,
    /// The approvers, as (uid, name).
    pub approvers: Vec<(u32, String)>,
    /// Who may own what root runs without a human.
    pub trust: Trust,
}

/// The uids of every user the town has: its agents enabled or not, its
/// humans, and every agent apply made and still records.
pub(crate) fn town_uids(town: &Town, approvers: &[(u32, String)], host_state: &Path) -> Vec<u32> {
    let mut uids: Vec<u32> = town.agents.values().map(|a| a.uid).collect();
    uids.extend(approvers.iter().map(|(u, _)| *u));
    if let Some(h) = town
        .human_user
        .as_deref()
        .and_then(|h| nix::unistd::User::from_name(h).ok().flatten())
    {
        uids.push(h.uid.as_raw());
    }
    // apply's record: {"agents": {"ada": {"uid": 1100, …}, …}}
    if let Ok(text) = std::fs::read_to_string(host_state) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Some(agents) = v.get("agents").and_then(|a| a.as_object()) {
                uids.extend(
                    agents
                        .values()
                        .filter_map(|a| a.get("uid")?.as_u64())
                        .filter_map(|u| u32::try_from(u).ok()),
                );
            }
        }
    }
    uids
}
