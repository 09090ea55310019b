//! Rolling hour and day windows of requests and tokens per agent and
//! credential, the grants a human added, and whether a crossing has been
//! reported yet.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::config::{Credential, Limits};

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// Requests and tokens one agent used with one credential.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    /// The agent's name.
    pub agent: String,
    /// The credential's name.
    pub credential: String,
    /// Requests in the last hour.
    pub requests_hour: u64,
    /// Requests in the last day.
    pub requests_day: u64,
    /// Tokens in the last hour.
    pub tokens_hour: u64,
    /// Tokens in the last day.
    pub tokens_day: u64,
}

/// A limit a request ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The limit in words: "1000 tokens per hour".
    pub limit: String,
    /// The amount used in the window.
    pub used: u64,
    /// "hour" or "day", for the message.
    pub window: &'static str,
    /// True the first time this limit is hit since it was last clear.
    pub first: bool,
}

#[derive(Default)]
struct Window {
    /// (unix secs, requests, tokens), oldest first.
    entries: VecDeque<(u64, u64, u64)>,
    /// (unix secs, requests, tokens) a human granted.
    grants: Vec<(u64, u64, u64)>,
    /// Limits already reported as reached.
    reported: HashSet<&'static str>,
}

#[derive(Clone, Copy)]
struct Totals {
    requests_hour: u64,
    requests_day: u64,
    tokens_hour: u64,
    tokens_day: u64,
}

impl Window {
    fn prune(&mut self, now: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(t, _, _)| now.saturating_sub(*t) >= DAY)
        {
            self.entries.pop_front();
        }
        self.grants.retain(|(t, _, _)| now.saturating_sub(*t) < DAY);
    }

    fn totals(&self, now: u64) -> Totals {
        let mut totals = Totals {
            requests_hour: 0,
            requests_day: 0,
            tokens_hour: 0,
            tokens_day: 0,
        };
        for &(t, requests, tokens) in &self.entries {
            let age = now.saturating_sub(t);
            if age < DAY {
                totals.requests_day += requests;
                totals.tokens_day += tokens;
            }
            if age < HOUR {
                totals.requests_hour += requests;
                totals.tokens_hour += tokens;
            }
        }
        totals
    }
}

/// All windows, keyed by (agent, credential).
#[derive(Default)]
pub(crate) struct Windows {
    map: HashMap<(String, String), Window>,
}

impl Windows {
    /// Makes the window for a credential first seen now, seeded from its `used`.
    pub(crate) fn ensure(&mut self, agent: &str, credential: &str, cred: &Credential) {
        self.map
            .entry((agent.to_owned(), credential.to_owned()))
            .or_insert_with(|| {
                let mut seeded: Vec<_> = cred.used.iter().map(|u| (u.at, 1, u.tokens)).collect();
                seeded.sort_by_key(|e| e.0);
                Window {
                    entries: seeded.into(),
                    ..Window::default()
                }
            });
    }

    /// Counts a request if every limit allows it, else says which limit it hit.
    pub(crate) fn admit(
        &mut self,
        agent: &str,
        credential: &str,
        limits: &Limits,
        now: u64,
    ) -> Result<(), Hit> {
        let window = self
            .map
            .entry((agent.to_owned(), credential.to_owned()))
            .or_default();
        window.prune(now);
        let totals = window.totals(now);
        let (granted_requests, granted_tokens) = window
            .grants
            .iter()
            .fold((0, 0), |(r, t), g| (r + g.1, t + g.2));
        let checks = [
            (
                "requests_per_hour",
                limits.requests_per_hour,
                granted_requests,
                totals.requests_hour,
                "requests",
                "hour",
            ),
            (
                "requests_per_day",
                limits.requests_per_day,
                granted_requests,
                totals.requests_day,
                "requests",
                "day",
            ),
            (
                "tokens_per_hour",
                limits.tokens_per_hour,
                granted_tokens,
                totals.tokens_hour,
                "tokens",
                "hour",
            ),
            (
                "tokens_per_day",
                limits.tokens_per_day,
                granted_tokens,
                totals.tokens_day,
                "tokens",
                "day",
            ),
        ];
        let mut hit = None;
        for (key, limit, granted, used, unit, span) in checks {
            match limit {
                Some(limit) if used >= limit.saturating_add(granted) => {
                    if hit.is_none() {
                        let first = window.reported.insert(key);
                        hit = Some(Hit {
                            limit: format!("{} {unit} per {span}", limit.saturating_add(granted)),
                            used,
                            window: span,
                            first,
                        });
                    }
                }
                _ => {
                    window.reported.remove(key);
                }
            }
        }
        match hit {
            Some(hit) => Err(hit),
            None => {
                window.entries.push_back((now, 1, 0));
                Ok(())
            }
        }
    }

    /// Adds the tokens a finished call reported.
    pub(crate) fn add_tokens(&mut self, agent: &str, credential: &str, tokens: u64, now: u64) {
        if tokens == 0 {
            return;
        }
        self.map
            .entry((agent.to_owned(), credential.to_owned()))
            .or_default()
            .entries
            .push_back((now, 0, tokens));
    }

    /// Raises the allowance of one credential for the next day.
    pub(crate) fn grant(
        &mut self,
        agent: &str,
        credential: &str,
        requests: u64,
        tokens: u64,
        now: u64,
    ) {
        self.map
            .entry((agent.to_owned(), credential.to_owned()))
            .or_default()
            .grants
            .push((now, requests, tokens));
    }

    /// Usage per agent and credential, sorted by agent then credential.
    pub(crate) fn summary(&mut self, now: u64) -> Vec<UsageSummary> {
        let mut out: Vec<_> = self
            .map
            .iter_mut()
            .map(|((agent, credential), window)| {
                window.prune(now);
                let t = window.totals(now);
                UsageSummary {
                    agent: agent.clone(),
                    credential: credential.clone(),
                    requests_hour: t.requests_hour,
                    requests_day: t.requests_day,
                    tokens_hour: t.tokens_hour,
                    tokens_day: t.tokens_day,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.agent, &a.credential).cmp(&(&b.agent, &b.credential)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests_per_hour: Option<u64>, tokens_per_day: Option<u64>) -> Limits {
        Limits {
            requests_per_hour,
            tokens_per_day,
            ..Limits::default()
        }
    }

    #[test]
    fn requests_age_out_of_the_hour() {
        let mut w = Windows::default();
        let l = limits(Some(2), None);
        assert!(w.admit("ada", "k", &l, 1000).is_ok());
        assert!(w.admit("ada", "k", &l, 1001).is_ok());
        let hit = w.admit("ada", "k", &l, 1002).unwrap_err();
        assert_eq!(hit.limit, "2 requests per hour");
        assert!(hit.first);
        assert!(
            !w.admit("ada", "k", &l, 1003).unwrap_err().first,
            "reported once"
        );
        assert!(w.admit("ada", "k", &l, 1000 + HOUR).is_ok());
        assert!(
            w.admit("ada", "k", &l, 1000 + HOUR).is_err(),
            "1001 is still in the hour"
        );
    }

    #[test]
    fn grants_raise_tokens_for_a_day() {
        let mut w = Windows::default();
        let l = limits(None, Some(100));
        w.admit("ada", "k", &l, 10).unwrap();
        w.add_tokens("ada", "k", 150, 11);
        let hit = w.admit("ada", "k", &l, 12).unwrap_err();
        assert_eq!((hit.used, hit.window), (150, "day"));
        w.grant("ada", "k", 0, 100, 13);
        w.admit("ada", "k", &l, 14).unwrap();
        let s = w.summary(14);
        assert_eq!(s[0].tokens_day, 150);
        assert_eq!(s[0].requests_day, 2);
        w.add_tokens("ada", "k", 200, 15);
        assert!(w.admit("ada", "k", &l, 16).is_err(), "the grant is used up");
        assert!(
            w.admit("ada", "k", &l, 16 + DAY).is_ok(),
            "old tokens aged out too"
        );
    }
}
