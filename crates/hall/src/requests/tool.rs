//! A tool the agent's own CLI asks permission to use. Claude Code, run by
//! the town with `nuketown mcp` as its permission-prompt tool, asks here —
//! as the agent, on the ask socket, known by `SO_PEERCRED` — whatever its
//! permission mode does not let it do unasked. Such a prompt never
//! dead-ends in chat: it is a request like any other, shown with the CLI,
//! the tool and its exact input on every approver channel, decided by a
//! human (or the mock file), and audited. Approving lets the CLI use the
//! tool once, as the agent: nothing here runs as root (`sudo` inside a tool
//! asks the hall again, as a sudo request).

use std::sync::Arc;
use std::time::Instant;

use nuketown_town::Agent;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::audit::Record;
use crate::connection::send;
use crate::hall::{Denial, Hall};
use crate::protocol::{RequestView, ToolView};
use crate::state::Outcome;
use crate::town::Loaded;

/// One tool request on the ask socket.
pub(crate) struct Ask<'a> {
    pub(crate) hall: Arc<Hall>,
    pub(crate) loaded: &'a Loaded,
    pub(crate) name: String,
    pub(crate) agent: Agent,
    pub(crate) uid: u32,
    pub(crate) id: String,
    pub(crate) arrived: Instant,
}

impl Ask<'_> {
    /// Ask about `view`; answer the CLI's permission-prompt tool.
    pub(crate) async fn serve(
        self,
        view: ToolView,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) {
        let mut rec = Record::new(&self.id, "tool", &self.name, self.uid);
        rec.argv = vec![view.cli.clone(), view.tool.clone(), view.input.clone()];
        rec.target = self.name.clone();
        rec.tool = Some(view.clone());
        let decided = self.decide(&view, rec.argv.clone(), rd, wr).await;
        rec.latency_ms = Some(self.arrived.elapsed().as_millis() as u64);
        let (outcome, mock) = match decided {
            Ok(x) => x,
            Err(d) => {
                rec.decision = "denied".into();
                rec.reason = d.reason.clone();
                rec.decided_by = Some(d.by.clone());
                self.hall.append(&rec);
                let _ = send(wr, &d.to_requester(&self.id)).await;
                return;
            }
        };
        super::conclude(&self.hall, rec, outcome, mock, wr).await;
    }

    /// The mock file, or a human on every channel.
    async fn decide(
        &self,
        view: &ToolView,
        argv: Vec<String>,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<(Outcome, bool), Denial> {
        let mut rv = RequestView::asked(
            &self.id,
            &self.name,
            self.uid,
            argv,
            self.agent.sudo.timeout,
        );
        rv.tool = Some(Box::new(view.clone()));
        super::mock_or_human(
            &self.hall,
            self.loaded,
            rv,
            self.agent.sudo.max_pending,
            rd,
            wr,
            "the CLI went away before the decision; the tool was not used",
        )
        .await
    }
}
