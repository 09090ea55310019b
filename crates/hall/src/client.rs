//! Blocking clients of the hall's sockets: the approver side (for
//! `nuketown approvals`, the desktop and Matrix approvers), the requester
//! side (for the entry point), and the ask socket (an agent asking for
//! itself: `nuketown ask`, `nuketown mcp`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{
    self, FromApprover, FromRequester, RequestView, ToApprover, ToRequester, MAX_REPLY, VERSION,
};

/// Why talking to the hall failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot reach the town hall at {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the town hall did not answer in time")]
    TimedOut,
    /// The connection broke.
    #[error("the connection to the town hall broke: {0}")]
    Io(std::io::Error),
    /// The hall closed the connection.
    #[error("the town hall closed the connection")]
    Closed,
    /// The hall said something that is not protocol v1.
    #[error("unexpected answer from the town hall: {0}")]
    Protocol(String),
    /// The hall refused the last message.
    #[error("{0}")]
    Refused(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::TimedOut,
            _ => ClientError::Io(e),
        }
    }
}

fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.display().to_string(),
        source,
    })
}

/// Read one line from the hall (at most [`MAX_REPLY`] bytes); `Closed` at the end.
fn read_line(rd: &mut BufReader<UnixStream>) -> Result<Vec<u8>, ClientError> {
    let mut line = Vec::new();
    let n = rd
        .by_ref()
        .take(MAX_REPLY as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(ClientError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_REPLY {
            ClientError::Protocol("an answer longer than the protocol allows".into())
        } else {
            ClientError::Closed
        });
    }
    Ok(line)
}

/// A connection to the approver socket. The hall knows who we are from the
/// socket itself (SO_PEERCRED).
pub struct Approver {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
}

/// The sending half of an [`Approver`] connection, for answering from
/// another thread while one reads events.
pub struct ApproverSender {
    wr: UnixStream,
}

impl ApproverSender {
    /// Send a decision for exactly this request (id, agent and argv as shown);
    /// the hall answers `ok` or `error` on the connection.
    pub fn send_decision(
        &mut self,
        r: &RequestView,
        approve: bool,
        grant_secs: Option<u64>,
        channel: &str,
    ) -> Result<(), ClientError> {
        send(&mut self.wr, &decision(r, approve, grant_secs, channel))
    }
}

fn send(wr: &mut UnixStream, m: &impl serde::Serialize) -> Result<(), ClientError> {
    wr.write_all(&protocol::encode(m))?;
    Ok(())
}

fn decision(
    r: &RequestView,
    approve: bool,
    grant_secs: Option<u64>,
    channel: &str,
) -> FromApprover {
    FromApprover::Decide {
        v: VERSION,
        id: r.id.clone(),
        agent: r.agent.clone(),
        argv: r.argv.clone(),
        approve,
        grant_secs,
        channel: channel.to_string(),
    }
}

impl Approver {
    /// Connect as the calling user.
    pub fn connect(path: &Path) -> Result<Approver, ClientError> {
        let s = connect(path)?;
        Ok(Approver {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
        })
    }

    /// Give up reading after `t` (`None`: wait forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<(), ClientError> {
        self.wr.set_read_timeout(t)?;
        Ok(())
    }

    /// A second handle for sending on this connection.
    pub fn sender(&self) -> Result<ApproverSender, ClientError> {
        Ok(ApproverSender {
            wr: self.wr.try_clone()?,
        })
    }

    /// Send any message (tools and tests that speak the protocol by hand).
    pub fn send(&mut self, m: &FromApprover) -> Result<(), ClientError> {
        send(&mut self.wr, m)
    }

    /// Send raw bytes (tests of what the hall does with bad input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.wr.write_all(bytes)?;
        Ok(())
    }

    /// The next message from the hall.
    pub fn recv(&mut self) -> Result<ToApprover, ClientError> {
        let line = read_line(&mut self.rd)?;
        protocol::parse_to_approver(&line).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn requests(&mut self) -> Result<Vec<RequestView>, ClientError> {
        match self.recv()? {
            ToApprover::Requests { requests } => Ok(requests),
            ToApprover::Error { message, .. } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// The pending requests.
    pub fn list(&mut self) -> Result<Vec<RequestView>, ClientError> {
        self.send(&FromApprover::List { v: VERSION })?;
        self.requests()
    }

    /// Start streaming on `channel`; returns what is pending now. Then call
    /// [`Approver::recv`] for each new request and resolution.
    pub fn watch(&mut self, channel: &str) -> Result<Vec<RequestView>, ClientError> {
        self.send(&FromApprover::Watch {
            v: VERSION,
            channel: Some(channel.to_string()),
        })?;
        self.requests()
    }

    /// Decide and wait for the hall's answer (not while watching: events
    /// would come first).
    pub fn decide(
        &mut self,
        r: &RequestView,
        approve: bool,
        grant_secs: Option<u64>,
        channel: &str,
    ) -> Result<(), ClientError> {
        self.send(&decision(r, approve, grant_secs, channel))?;
        match self.recv()? {
            ToApprover::Ok { .. } => Ok(()),
            ToApprover::Error { message, .. } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}

/// The entry point's conversation: one request, its decision, the exit status.
pub struct Requester {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
}

impl Requester {
    /// Connect to the requester socket.
    pub fn connect(path: &Path) -> Result<Requester, ClientError> {
        let s = connect(path)?;
        Ok(Requester {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
        })
    }

    /// Give up reading after `t` (`None`: wait forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<(), ClientError> {
        self.wr.set_read_timeout(t)?;
        Ok(())
    }

    /// Send the request.
    pub fn ask(&mut self, ask: protocol::Ask) -> Result<(), ClientError> {
        send(&mut self.wr, &FromRequester::Request { v: VERSION, ask })
    }

    /// Send raw bytes (tests of what the hall does with bad input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.wr.write_all(bytes)?;
        Ok(())
    }

    /// The next message: pending, or the decision.
    pub fn recv(&mut self) -> Result<ToRequester, ClientError> {
        let line = read_line(&mut self.rd)?;
        protocol::parse_to_requester(&line).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Report a request the entry point refused before asking (for the audit log).
    pub fn refused(
        &mut self,
        sudo_uid: u32,
        argv: &[String],
        reason: &str,
    ) -> Result<(), ClientError> {
        send(
            &mut self.wr,
            &FromRequester::Refused {
                v: VERSION,
                sudo_uid,
                argv: argv.to_vec(),
                reason: reason.to_string(),
            },
        )?;
        // The hall answers once it has written the record.
        self.recv().map(|_| ())
    }

    /// Report the approved command's exit status (for the audit log).
    pub fn exit(&mut self, id: &str, status: i32) -> Result<(), ClientError> {
        send(
            &mut self.wr,
            &FromRequester::Exit {
                v: VERSION,
                id: id.to_string(),
                status,
            },
        )
    }
}

/// The answer to something an agent asked for itself on the ask socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Request id.
    pub id: String,
    /// Whether it was approved.
    pub approved: bool,
    /// Why, in the hall's words (the agent's words in it escaped).
    pub reason: String,
}

/// Ask the hall on the ask socket `path`, as this process's user (the hall
/// knows it by `SO_PEERCRED`), and wait for the decision; `pending` is told
/// the request's id and how long it may wait for a human. A hall that
/// closes the connection without a decision (it serves only the town's
/// agents) is a [`ClientError::Closed`]: a denial.
pub fn ask(
    path: &Path,
    msg: &protocol::FromAsker,
    mut pending: impl FnMut(&str, u64),
) -> Result<Answer, ClientError> {
    let mut s = connect(path)?;
    s.write_all(&protocol::encode(msg))?;
    let mut rd = BufReader::new(s);
    loop {
        let line = read_line(&mut rd)?;
        match protocol::parse_to_requester(&line)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            ToRequester::Pending { id, timeout_secs } => pending(&id, timeout_secs),
            ToRequester::Decision {
                id,
                approved,
                reason,
                ..
            } => {
                return Ok(Answer {
                    id,
                    approved,
                    reason,
                })
            }
        }
    }
}
