//! Blocking clients of the hall's two sockets: the approver side (for
//! `nuketown approvals` and the desktop and Matrix approvers) and the
//! requester side (for the entry point).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::protocol::{self, FromApprover, FromRequester, ToApprover, ToRequester, VERSION};

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
    /// The connection broke.
    #[error("the town hall went away: {0}")]
    Io(#[from] std::io::Error),
    /// The hall closed the connection.
    #[error("the town hall closed the connection (are you an approver? members of group nuketown-approvers listed in the town)")]
    Closed,
    /// The hall said something unexpected.
    #[error("unexpected answer from the town hall: {0}")]
    Protocol(String),
    /// The hall refused.
    #[error("{0}")]
    Refused(String),
}

/// A connection to the approver socket.
pub struct Approver {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
}

impl Approver {
    /// Connect (as the calling user; the hall identifies us by SO_PEERCRED).
    pub fn connect(path: &Path) -> Result<Approver, ClientError> {
        let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Approver {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
        })
    }

    fn send(&mut self, m: &FromApprover) -> Result<(), ClientError> {
        self.wr.write_all(&protocol::encode(m))?;
        Ok(())
    }

    /// The next message from the hall.
    pub fn next(&mut self) -> Result<ToApprover, ClientError> {
        let mut line = Vec::new();
        if self.rd.read_until(b'\n', &mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        protocol::parse_to_approver(&line).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// The pending requests.
    pub fn list(&mut self) -> Result<Vec<protocol::RequestView>, ClientError> {
        self.send(&FromApprover::List { v: VERSION })?;
        match self.next()? {
            ToApprover::Requests { requests } => Ok(requests),
            ToApprover::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Start streaming; returns what is pending now. Then call [`Approver::next`].
    pub fn watch(&mut self) -> Result<Vec<protocol::RequestView>, ClientError> {
        self.send(&FromApprover::Watch { v: VERSION })?;
        match self.next()? {
            ToApprover::Requests { requests } => Ok(requests),
            ToApprover::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Send a decision for exactly this request (id, agent and argv must match).
    pub fn send_decision(
        &mut self,
        r: &protocol::RequestView,
        approve: bool,
        grant_secs: Option<u64>,
        channel: &str,
    ) -> Result<(), ClientError> {
        self.send(&FromApprover::Decide {
            v: VERSION,
            id: r.id.clone(),
            agent: r.agent.clone(),
            argv: r.argv.clone(),
            approve,
            grant_secs,
            channel: channel.to_string(),
        })
    }

    /// Decide and wait for the hall's answer (not for use while watching).
    pub fn decide(
        &mut self,
        r: &protocol::RequestView,
        approve: bool,
        grant_secs: Option<u64>,
        channel: &str,
    ) -> Result<(), ClientError> {
        self.send_decision(r, approve, grant_secs, channel)?;
        match self.next()? {
            ToApprover::Ok { .. } => Ok(()),
            ToApprover::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}

/// The entry point's conversation: send the request, read until the decision.
pub struct Requester {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
}

impl Requester {
    /// Connect to the requester socket.
    pub fn connect(path: &Path) -> Result<Requester, ClientError> {
        let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Requester {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
        })
    }

    /// Send the request.
    pub fn ask(&mut self, ask: protocol::Ask) -> Result<(), ClientError> {
        self.wr
            .write_all(&protocol::encode(&FromRequester::Request {
                v: VERSION,
                ask,
            }))?;
        Ok(())
    }

    /// The next message (pending or decision).
    pub fn next(&mut self) -> Result<ToRequester, ClientError> {
        let mut line = Vec::new();
        if self.rd.read_until(b'\n', &mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        protocol::parse_to_requester(&line).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Report the approved command's exit status (for the audit log).
    pub fn exit(&mut self, id: &str, status: i32) -> Result<(), ClientError> {
        self.wr.write_all(&protocol::encode(&FromRequester::Exit {
            id: id.to_string(),
            status,
        }))?;
        Ok(())
    }
}
