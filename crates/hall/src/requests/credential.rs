//! More of a credential past its limit. The gateway refuses a call over a
//! credential's limit and says so in the CLI's own error; a credential
//! declared with `onLimit = "ask"` may then ask here — as the agent, on the
//! ask socket, known by `SO_PEERCRED` — for one more window's worth of its
//! limits (`nuketown ask credential NAME --reason …`). A human decides on
//! any channel (or the mock file); approving raises exactly that
//! allowance at the gateway, until the day's window passes. The key
//! itself never leaves the town. A credential with `onLimit = "deny"`, or
//! one the agent does not have, is refused without a human.

use nuketown_town::Credential;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::Asked;
use crate::audit::Record;
use crate::hall::Denial;
use crate::protocol::MoreView;

/// A credential's limits in words.
fn limits_text(c: &Credential) -> String {
    let l = &c.limits;
    let mut out = Vec::new();
    for (v, what) in [
        (l.requests_per_hour, "requests an hour"),
        (l.requests_per_day, "requests a day"),
        (l.tokens_per_hour, "tokens an hour"),
        (l.tokens_per_day, "tokens a day"),
    ] {
        if let Some(v) = v {
            out.push(format!("{v} {what}"));
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

/// Ask about more of `credential`; answer `nuketown ask`.
pub(crate) async fn serve(
    ask: Asked<'_>,
    credential: String,
    reason: String,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
) {
    let name = &ask.name;
    let mut rec = Record::new(&ask.id, "credential", name, ask.uid);
    rec.target = credential.clone();
    rec.argv = vec!["more".into(), credential.clone()];
    let creds = ask.loaded.town.credentials_of(name);
    let c = match creds.get(&credential) {
        None => Err(format!(
            "{name} has no credential {credential:?} (agents.{name}.credentials); nothing was changed"
        )),
        Some(c) if c.on_limit != "ask" => Err(format!(
            "agents.{name}.credentials.{credential}.onLimit is {:?}: its limits ({}) are final, and no human is asked; nothing was changed",
            c.on_limit,
            limits_text(c)
        )),
        Some(c) if c.limits.is_empty() => Err(format!(
            "{credential} has no limit to raise; nothing was changed"
        )),
        Some(c) => Ok(c),
    };
    let c = match c {
        Ok(c) => c,
        Err(why) => return ask.refused(rec, Denial::hall(why), wr).await,
    };
    let l = &c.limits;
    let view = MoreView {
        credential: credential.clone(),
        api: c.api.clone(),
        limits: limits_text(c),
        used: crate::gateway::used_text(&ask.hall, name, &credential),
        requests: l.requests_per_hour.or(l.requests_per_day).unwrap_or(0),
        tokens: l.tokens_per_hour.or(l.tokens_per_day).unwrap_or(0),
        reason: reason.clone(),
    };
    rec.reason = reason;
    let (requests, tokens) = (view.requests, view.tokens);
    let decided = ask
        .mock_or_human(
            rec.argv.clone(),
            |rv| rv.more = Some(Box::new(view)),
            rd,
            wr,
            "nuketown ask went away before the decision; nothing was raised",
        )
        .await;
    let (mut outcome, mock) = match decided {
        Ok(x) => x,
        Err(d) => return ask.refused(rec, d, wr).await,
    };
    if outcome.approved
        && !crate::gateway::grant_more(&ask.hall, name, &credential, requests, tokens).await
    {
        outcome.approved = false;
        outcome.reason = format!(
            "approved, but the gateway is not running: nothing was raised ({})",
            outcome.reason
        );
    }
    ask.conclude(rec, outcome, mock, wr).await;
}
