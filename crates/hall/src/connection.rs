//! Lines on the hall's sockets: reading one bounded line, writing one
//! message, and how many connections one uid may hold on the ask socket.
//! Nothing here knows what a message means.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::protocol::{self, MAX_LINE};

/// How long a peer has to send its first message after connecting.
pub const FIRST_LINE_WITHIN: Duration = Duration::from_secs(10);

/// Read one line of at most [`MAX_LINE`] bytes: `None` at a clean end,
/// an error when it is too long or cut off.
pub(crate) async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > MAX_LINE {
            protocol::ProtocolError::TooLong.to_string()
        } else {
            "the connection closed in the middle of a message".into()
        });
    }
    buf.pop();
    Ok(Some(buf))
}

/// The first line a peer sends, within [`FIRST_LINE_WITHIN`]: `Ok(None)`
/// when it closed (or said nothing in time) — nobody to answer.
pub(crate) async fn first_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<Option<Vec<u8>>, String> {
    match tokio::time::timeout(FIRST_LINE_WITHIN, read_line(r)).await {
        Ok(l) => l,
        Err(_) => Err(format!(
            "no request within {} s",
            FIRST_LINE_WITHIN.as_secs()
        )),
    }
}

/// Write one message and flush it.
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    m: &impl serde::Serialize,
) -> std::io::Result<()> {
    w.write_all(&protocol::encode(m)).await?;
    w.flush().await
}

/// Wait until the peer sends anything or goes away: how a requester
/// withdraws a request it is waiting on.
pub(crate) async fn gone<R: AsyncRead + Unpin>(r: &mut R) {
    let mut probe = [0u8; 1];
    let _ = r.read(&mut probe).await;
}

/// Most connections one uid may hold open on the ask socket at once.
pub const MAX_CONNECTIONS_PER_UID: usize = 16;

/// Open connections per uid on the ask socket.
#[derive(Default)]
pub(crate) struct Connections(Mutex<HashMap<u32, usize>>);

/// One open connection, counted until dropped.
pub(crate) struct Slot<'a>(&'a Connections, u32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl Connections {
    /// A slot for `uid`, unless it holds [`MAX_CONNECTIONS_PER_UID`] already.
    pub(crate) fn take(&self, uid: u32) -> Option<Slot<'_>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_UID {
            return None;
        }
        *n += 1;
        Some(Slot(self, uid))
    }
}
