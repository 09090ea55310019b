//! A tool the agent's own CLI asks permission to use. Claude Code, run by
//! the town with `nuketown mcp` as its permission-prompt tool, asks here —
//! as the agent, on the ask socket, known by `SO_PEERCRED` — whatever its
//! permission mode does not let it do unasked. Such a prompt never
//! dead-ends in chat: it is a request like any other, shown with the CLI,
//! the tool and its exact input on every approver channel, decided by a
//! human (or the mock file), and audited. Approving lets the CLI use the
//! tool once, as the agent: nothing here runs as root (`sudo` inside a tool
//! asks the hall again, as a sudo request).

use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::Asked;
use crate::audit::Record;
use crate::protocol::ToolView;

/// Ask about `view`; answer the CLI's permission-prompt tool.
pub(crate) async fn serve(
    ask: Asked<'_>,
    view: ToolView,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
) {
    let mut rec = Record::new(&ask.id, "tool", &ask.name, ask.uid);
    rec.argv = vec![view.cli.clone(), view.tool.clone(), view.input.clone()];
    rec.target = ask.name.clone();
    rec.tool = Some(view.clone());
    let decided = ask
        .mock_or_human(
            rec.argv.clone(),
            |rv| rv.tool = Some(Box::new(view)),
            rd,
            wr,
            "the CLI went away before the decision; the tool was not used",
        )
        .await;
    match decided {
        Ok((outcome, mock)) => ask.conclude(rec, outcome, mock, wr).await,
        Err(d) => ask.refused(rec, d, wr).await,
    }
}
