//! What tier an agent should be at now: a pure function of what git
//! declares (its tier, the largest it may be moved to, what is granted
//! without a human, its idle timeout), what was asked and decided, and when
//! it was last active. The controller reads these from the Deployment's
//! annotations and applies the answer.
//!
//! Escalation needs a decision — a human's (recorded with who and through
//! which channel) or an auto-approve rule; de-escalation is free: after
//! `idleTimeout` without activity the agent goes back to its declared tier.

use std::time::Duration;

/// Tiers, smallest first.
pub use nuketown_town::tiers::ORDER;

/// Deployment annotation the operator owns: the tier the agent is at now.
pub const CURRENT_TIER: &str = "nuketown.dev/current-tier";
/// Deployment annotation: a request to move, `TIER` plus its decision
/// (`large;approved-by=josh;via=terminal;at=1795418815123`, or without
/// `approved-by` while only an auto-approve rule can grant it).
pub const TIER_REQUEST: &str = "nuketown.dev/tier-request";
/// Deployment annotation: when the agent was last active, ms since the epoch
/// (a chat message, a request, process CPU above the floor).
pub const LAST_ACTIVE: &str = "nuketown.dev/last-active";
/// Deployment annotation the operator owns: what it did last, in words.
pub const STATUS: &str = "nuketown.dev/scaling-status";
/// The field manager a tier request must be written by: the town hall's
/// relay (`nuketown cloud requests`), after a human or a rule decided. A
/// request written by anyone else — the agent, if some role ever let it
/// patch its Deployment; a hand-run `kubectl annotate` — moves nothing.
pub const HALL_MANAGER: &str = nuketown_hall::resources::FIELD_MANAGER;

use nuketown_town::tiers::rank;

/// A request to move, as the annotation carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The tier asked for.
    pub tier: String,
    /// Who approved it (a human), when one did.
    pub approved_by: Option<String>,
    /// Through which channel.
    pub via: Option<String>,
    /// When it was decided (or asked), ms since the epoch.
    pub at_ms: u64,
    /// The town hall's request id (its audit log has who asked, who decided, why).
    pub id: Option<String>,
}

impl Request {
    /// Parse `TIER[;approved-by=WHO][;via=CHANNEL][;at=MS][;request=ID]`.
    pub fn parse(s: &str) -> Result<Request, String> {
        let mut parts = s.split(';');
        let tier = parts.next().unwrap_or_default().trim().to_string();
        let mut r = Request {
            tier,
            approved_by: None,
            via: None,
            at_ms: 0,
            id: None,
        };
        for p in parts {
            match p.split_once('=') {
                Some(("approved-by", v)) if !v.is_empty() => r.approved_by = Some(v.into()),
                Some(("via", v)) if !v.is_empty() => r.via = Some(v.into()),
                Some(("request", v)) if !v.is_empty() => r.id = Some(v.into()),
                Some(("at", v)) => {
                    r.at_ms = v
                        .parse()
                        .map_err(|_| format!("at={v:?} is not a time in ms"))?
                }
                _ => return Err(format!("{p:?} is not approved-by=, via=, at= or request=")),
            }
        }
        Ok(r)
    }
}

/// Everything the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The declared tier (`cloud.resources`).
    pub declared: String,
    /// The largest tier it may be moved to (`scaling.maxResources`).
    pub max: String,
    /// Tiers granted without a human (`scaling.autoApprove`).
    pub auto_approve: Vec<String>,
    /// `scaling.idleTimeout`, when declared.
    pub idle_timeout: Option<Duration>,
    /// The tier it is at now (the operator's annotation; the declared tier when absent).
    pub current: Option<String>,
    /// The request annotation, raw.
    pub request: Option<String>,
    /// Who wrote the request annotation (its field manager, from the
    /// Deployment's `managedFields`); only [`HALL_MANAGER`] is obeyed.
    pub request_by: Option<String>,
    /// Last activity, ms since the epoch.
    pub last_active_ms: Option<u64>,
    /// Now, ms since the epoch.
    pub now_ms: u64,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing; look again after this long (the idle deadline), or on the next change.
    Stay {
        /// When to look again.
        recheck: Option<Duration>,
    },
    /// Move the workload to `tier`; `why` goes in the status annotation.
    Move {
        /// The tier to move to.
        tier: String,
        /// Why, in words (who approved, or idle).
        why: String,
        /// Whether the request annotation is used up (removed).
        clear_request: bool,
    },
    /// A request that cannot be granted: nothing moves; `why` goes in the status.
    Refuse {
        /// What is wrong and the fix.
        why: String,
    },
}

/// Decide. Pure: the same input, the same answer.
pub fn decide(o: &Observed) -> Decision {
    let current = o.current.clone().unwrap_or_else(|| o.declared.clone());
    let (Some(declared), Some(max)) = (rank(&o.declared), rank(&o.max)) else {
        return Decision::Refuse {
            why: format!(
                "the declared tier {:?} or maximum {:?} is not a tier; fix the town",
                o.declared, o.max
            ),
        };
    };
    let active_at = o.last_active_ms.unwrap_or(0);
    if let Some(raw) = &o.request {
        if o.request_by.as_deref() != Some(HALL_MANAGER) {
            return Decision::Refuse {
                why: format!(
                    "{TIER_REQUEST} was written by {}, not by the town hall ({HALL_MANAGER}); nothing moved — ask with `nuketown ask resources`",
                    o.request_by.as_deref().unwrap_or("an unknown field manager")
                ),
            };
        }
        let r = match Request::parse(raw) {
            Ok(r) => r,
            Err(e) => {
                return Decision::Refuse {
                    why: format!("{TIER_REQUEST} {raw:?}: {e}; nothing moved"),
                }
            }
        };
        let Some(want) = rank(&r.tier) else {
            return Decision::Refuse {
                why: format!(
                    "{:?} is not a tier; ask for one of {}; nothing moved",
                    r.tier,
                    ORDER.join(", ")
                ),
            };
        };
        if want > max {
            return Decision::Refuse {
                why: format!(
                    "{:?} is above the largest tier this agent may be moved to ({:?}, scaling.maxResources); nothing moved",
                    r.tier, o.max
                ),
            };
        }
        let granted = match &r.approved_by {
            Some(who) => Some(format!(
                "approved by {who}{}{}",
                r.via
                    .as_ref()
                    .map(|v| format!(" via {v}"))
                    .unwrap_or_default(),
                r.id.as_ref()
                    .map(|i| format!(" (request {i})"))
                    .unwrap_or_default()
            )),
            None if o.auto_approve.contains(&r.tier) || want <= declared => {
                Some(if want <= declared {
                    "no approval needed: not above the declared tier".into()
                } else {
                    format!("auto-approved (scaling.autoApprove has {:?})", r.tier)
                })
            }
            None => None,
        };
        match granted {
            Some(why) if r.tier != current => {
                return Decision::Move {
                    tier: r.tier.clone(),
                    why,
                    clear_request: true,
                }
            }
            Some(_) => {
                // Already there: the request is used up; idle still applies below.
                if want == declared {
                    return Decision::Move {
                        tier: r.tier,
                        why: "already at the declared tier".into(),
                        clear_request: true,
                    };
                }
            }
            None => {
                return Decision::Stay { recheck: None };
            }
        }
    }
    // De-escalation is free: idle long enough above the declared tier → back.
    if rank(&current).is_some_and(|c| c != declared) {
        if let Some(idle) = o.idle_timeout {
            let deadline = active_at.saturating_add(idle.as_millis() as u64);
            if o.now_ms >= deadline {
                return Decision::Move {
                    tier: o.declared.clone(),
                    why: format!(
                        "idle for {} s (scaling.idleTimeout): back to the declared tier",
                        (o.now_ms - active_at) / 1000
                    ),
                    clear_request: o.request.is_some(),
                };
            }
            return Decision::Stay {
                recheck: Some(Duration::from_millis(deadline - o.now_ms)),
            };
        }
    }
    if rank(&current).is_none() {
        return Decision::Move {
            tier: o.declared.clone(),
            why: format!("{current:?} is not a tier: back to the declared tier"),
            clear_request: false,
        };
    }
    Decision::Stay { recheck: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Observed {
        Observed {
            declared: "small".into(),
            max: "large".into(),
            auto_approve: vec![],
            idle_timeout: Some(Duration::from_secs(1800)),
            current: None,
            request: None,
            request_by: Some(HALL_MANAGER.into()),
            last_active_ms: Some(1_000_000),
            now_ms: 1_000_000,
        }
    }

    #[test]
    fn a_human_approved_request_moves_up() {
        let mut o = base();
        o.request = Some("large;approved-by=josh;via=terminal;at=5".into());
        assert_eq!(
            decide(&o),
            Decision::Move {
                tier: "large".into(),
                why: "approved by josh via terminal".into(),
                clear_request: true
            }
        );
    }

    #[test]
    fn an_unapproved_request_waits_unless_a_rule_grants_it() {
        let mut o = base();
        o.request = Some("large".into());
        assert_eq!(decide(&o), Decision::Stay { recheck: None });
        o.auto_approve = vec!["large".into()];
        assert!(matches!(decide(&o), Decision::Move { tier, .. } if tier == "large"));
    }

    #[test]
    fn above_the_maximum_or_not_a_tier_is_refused() {
        let mut o = base();
        o.request = Some("gpu;approved-by=josh".into());
        assert!(
            matches!(decide(&o), Decision::Refuse { why } if why.contains("above the largest tier"))
        );
        o.request = Some("huge;approved-by=josh".into());
        assert!(matches!(decide(&o), Decision::Refuse { why } if why.contains("not a tier")));
        o.request = Some("large;approved=josh".into());
        assert!(matches!(decide(&o), Decision::Refuse { .. }));
    }

    #[test]
    fn a_request_not_written_by_the_hall_moves_nothing() {
        let mut o = base();
        o.request = Some("large;approved-by=josh".into());
        for who in [Some("kubectl-annotate"), Some("ada"), None] {
            o.request_by = who.map(str::to_string);
            assert!(
                matches!(decide(&o), Decision::Refuse { ref why } if why.contains("not by the town hall")),
                "{who:?}: {:?}",
                decide(&o)
            );
        }
    }

    #[test]
    fn idle_goes_back_down_without_approval() {
        let mut o = base();
        o.current = Some("large".into());
        o.now_ms = o.last_active_ms.unwrap() + 1_799_000;
        assert_eq!(
            decide(&o),
            Decision::Stay {
                recheck: Some(Duration::from_secs(1))
            }
        );
        o.now_ms += 1000;
        assert!(matches!(decide(&o), Decision::Move { tier, .. } if tier == "small"));
        // Without an idle timeout it stays where it was moved.
        o.idle_timeout = None;
        assert_eq!(decide(&o), Decision::Stay { recheck: None });
    }
}
