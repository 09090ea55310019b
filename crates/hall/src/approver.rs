//! An approver's connection on the approver socket (group
//! `nuketown-approvers`): who it is (`SO_PEERCRED`: root or a listed
//! approver, never what it says), what is pending, the events as they
//! come, and its decisions, each bound to a request id. When the last
//! watching approver goes, what it was shown is denied.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};

use crate::connection::{read_line, send};
use crate::hall::Hall;
use crate::protocol::{self, FromApprover, ToApprover};

/// One approver connection.
pub(crate) async fn serve(hall: Arc<Hall>, stream: UnixStream) {
    let peer = stream.peer_cred().map(|p| p.uid()).ok();
    let Some(who) = peer.and_then(|uid| hall.approver_name(uid)) else {
        tracing::warn!(peer_uid = ?peer, "closed an approver connection from a user who is not an approver");
        return;
    };
    let (rd, wr) = stream.into_split();
    let mut wr = tokio::io::BufWriter::new(wr);
    // Lines are read on their own task, so waiting for events never cuts a line in half.
    let (lines_tx, mut lines) = mpsc::channel::<Result<Option<Vec<u8>>, String>>(8);
    let reader = tokio::spawn(async move {
        let mut rd = BufReader::new(rd);
        loop {
            let l = read_line(&mut rd).await;
            let last = !matches!(l, Ok(Some(_)));
            if lines_tx.send(l).await.is_err() || last {
                return;
            }
        }
    });
    let mut events: Option<broadcast::Receiver<ToApprover>> = None;
    let mut watch_channel = String::from("approver");
    loop {
        tokio::select! {
            l = lines.recv() => {
                let line = match l {
                    Some(Ok(Some(line))) => line,
                    Some(Ok(None)) | None => break,
                    Some(Err(e)) => {
                        let _ = send(&mut wr, &ToApprover::Error { id: None, message: e }).await;
                        break;
                    }
                };
                let reply = match protocol::parse_approver(&line) {
                    Err(e) => ToApprover::Error { id: None, message: e.to_string() },
                    Ok(FromApprover::List { .. }) => ToApprover::Requests { requests: hall.state().pending() },
                    Ok(FromApprover::Watch { channel, .. }) => {
                        if let Some(c) = channel {
                            watch_channel = c;
                        }
                        if events.is_some() {
                            ToApprover::Requests { requests: hall.state().pending() }
                        } else {
                            let (now, rx) = hall.state().watch();
                            events = Some(rx);
                            ToApprover::Requests { requests: now }
                        }
                    }
                    Ok(FromApprover::Decide { id, agent, argv, approve, grant_secs, channel, .. }) => {
                        match hall.state().decide(&who, &id, &agent, &argv, approve, grant_secs, &channel) {
                            Ok(()) => ToApprover::Ok { id },
                            Err(e) => {
                                tracing::warn!(approver = %who, "refused a decision: {e}");
                                ToApprover::Error { id: Some(id), message: e.to_string() }
                            }
                        }
                    }
                };
                if send(&mut wr, &reply).await.is_err() {
                    break;
                }
            }
            ev = async { events.as_mut().expect("guarded by the if").recv().await }, if events.is_some() => {
                let mut next = Some(ev);
                let mut broken = false;
                // Write everything already waiting, then flush once.
                while let Some(ev) = next.take() {
                    match ev {
                        Ok(m) => {
                            if wr.write_all(&protocol::encode(&m)).await.is_err() {
                                broken = true;
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let m = ToApprover::Error { id: None, message: format!("missed {n} events; list again") };
                            if wr.write_all(&protocol::encode(&m)).await.is_err() {
                                broken = true;
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            broken = true;
                            break;
                        }
                    }
                    next = match events.as_mut().expect("watching").try_recv() {
                        Ok(m) => Some(Ok(m)),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(broadcast::error::RecvError::Lagged(n))),
                        Err(_) => None,
                    };
                }
                if broken || wr.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    reader.abort();
    if events.is_some() {
        let denied = hall.state().unwatch(&who, &watch_channel);
        if denied > 0 {
            tracing::warn!(
                "{who}'s {watch_channel} approver went away: denied {denied} pending request(s)"
            );
        }
    }
}
