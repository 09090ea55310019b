//! Resource tiers, smallest first, and what an agent may ask for: the one
//! place the town hall (deciding a request), validation and the cloud
//! render agree on the order.

use crate::schema::Agent;

/// Tiers, smallest first.
pub const ORDER: [&str; 4] = ["small", "standard", "large", "gpu"];

/// What each tier of [`ORDER`] is: CPUs, memory and scratch space in GiB
/// (requests equal limits). The cloud render's tiers are built from these.
pub const SIZES: [Size; 4] = [
    Size {
        cpus: 1,
        memory_gib: 2,
        scratch_gib: 10,
    },
    Size {
        cpus: 2,
        memory_gib: 4,
        scratch_gib: 20,
    },
    Size {
        cpus: 4,
        memory_gib: 8,
        scratch_gib: 40,
    },
    Size {
        cpus: 4,
        memory_gib: 16,
        scratch_gib: 40,
    },
];

/// The size of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// CPUs.
    pub cpus: u32,
    /// Memory, GiB.
    pub memory_gib: u32,
    /// Scratch space for the home and /tmp, GiB.
    pub scratch_gib: u32,
}

/// A tier's place in [`ORDER`]; `None` for a word that is not a tier.
pub fn rank(tier: &str) -> Option<usize> {
    ORDER.iter().position(|t| *t == tier)
}

/// How a request for `tier` may be granted, before any human is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// At or below the declared tier: moving down is free (no approval).
    Free(String),
    /// Named by `scaling.autoApprove`: granted by that rule.
    Rule(String),
    /// Above the declared tier, within `scaling.maxResources`: a human decides.
    Human,
}

/// Check a request from agent `name` for `tier` against its declaration.
/// Every refusal names the key and the fix; nothing is asked of a human
/// for a request that could never be granted.
pub fn check_request(name: &str, agent: &Agent, tier: &str) -> Result<Grant, String> {
    let k = format!("agents.{name}.cloud");
    let cloud = &agent.cloud;
    if !cloud.enable {
        return Err(format!(
            "{k}.enable is not true: {name} has no workload in the cluster to move"
        ));
    }
    let Some(want) = rank(tier) else {
        return Err(format!(
            "{tier:?} is not a tier; ask for one of {}",
            ORDER.join(", ")
        ));
    };
    let declared = rank(&cloud.resources).unwrap_or(1);
    if want <= declared {
        return Ok(Grant::Free(format!(
            "no approval needed: {tier:?} is not above the declared tier {:?} ({k}.resources)",
            cloud.resources
        )));
    }
    let Some(max) = cloud.scaling.max_resources.as_deref() else {
        return Err(format!(
            "{k}.scaling.maxResources is not set: {name} may not be moved above {:?}; declare the largest tier it may ask for",
            cloud.resources
        ));
    };
    if rank(max).is_some_and(|m| want > m) {
        return Err(format!(
            "{tier:?} is above the largest tier {name} may be moved to ({k}.scaling.maxResources = {max:?})"
        ));
    }
    if cloud.scaling.auto_approve.iter().any(|t| t == tier) {
        return Ok(Grant::Rule(format!(
            "auto-approved: {k}.scaling.autoApprove has {tier:?}"
        )));
    }
    Ok(Grant::Human)
}

/// The Deployment annotation the town hall's relay writes for a decided
/// request, and the scaling operator obeys (only when the hall's field
/// manager wrote it): `TIER;approved-by=WHO;via=CHANNEL;at=MS;request=ID`.
pub fn request_annotation(tier: &str, who: &str, via: &str, at_ms: u64, id: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c == ';' || c == '=' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    format!(
        "{};approved-by={};via={};at={at_ms};request={}",
        safe(tier),
        safe(who),
        safe(via),
        safe(id)
    )
}

/// What a tier is, in words for an approver (`4 CPUs, 8 GiB memory`); the
/// cloud render's numbers.
pub fn size(tier: &str, gpus: Option<u32>) -> String {
    let Some(Size {
        cpus: cpu,
        memory_gib: mem,
        ..
    }) = rank(tier).map(|i| SIZES[i])
    else {
        return format!("{tier:?} is not a tier");
    };
    let gpu = match (tier, gpus) {
        ("gpu", Some(n)) => format!(", {n} GPU{}", if n == 1 { "" } else { "s" }),
        ("gpu", None) => ", GPUs".into(),
        _ => String::new(),
    };
    format!(
        "{cpu} CPU{}, {mem} GiB memory{gpu}",
        if cpu == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_annotation_cannot_be_given_extra_fields_through_a_name() {
        let a = request_annotation("large", "josh;approved-by=eve", "matrix:=x", 5, "ab");
        assert_eq!(
            a,
            "large;approved-by=josh_approved-by_eve;via=matrix:_x;at=5;request=ab"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn agent(declared: &str, max: Option<&str>, auto: Vec<String>) -> Agent {
        let mut a: Agent = serde_json::from_str(r#"{"uid":1100}"#).unwrap();
        a.cloud.enable = true;
        a.cloud.resources = declared.into();
        a.cloud.scaling.max_resources = max.map(str::to_string);
        a.cloud.scaling.auto_approve = auto;
        a
    }

    proptest! {
        /// Whatever tier is asked for: nothing above maxResources is ever
        /// granted or put to a human; only what is at or below the declared
        /// tier is free; only autoApprove's tiers are granted by rule.
        #[test]
        fn nothing_above_the_maximum_is_ever_granted(
            tier in prop_oneof![Just("small".to_string()), Just("standard".to_string()), Just("large".to_string()), Just("gpu".to_string()), ".{0,12}"],
            d in 0usize..4, m in proptest::option::of(0usize..4), auto in proptest::collection::vec(0usize..4, 0..3),
        ) {
            let max = m.map(|m| ORDER[m.max(d)]);
            let auto: Vec<String> = auto.into_iter().map(|i| ORDER[i].to_string()).collect();
            let a = agent(ORDER[d], max, auto.clone());
            let got = check_request("ada", &a, &tier);
            match (rank(&tier), &got) {
                (None, r) => prop_assert!(r.is_err()),
                (Some(w), Ok(Grant::Free(_))) => prop_assert!(w <= d),
                (Some(w), Ok(Grant::Rule(_))) => {
                    prop_assert!(w > d && max.is_some_and(|m| w <= rank(m).unwrap()));
                    prop_assert!(auto.contains(&tier));
                }
                (Some(w), Ok(Grant::Human)) => {
                    prop_assert!(w > d && max.is_some_and(|m| w <= rank(m).unwrap()));
                    prop_assert!(!auto.contains(&tier));
                }
                (Some(w), Err(_)) => prop_assert!(w > d && max.is_none_or(|m| w > rank(m).unwrap())),
            }
        }
    }
}
