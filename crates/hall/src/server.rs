//! The hall's sockets: bound here (or handed over by systemd), accepted,
//! and each connection given to what serves its kind — the entry point's
//! requests ([`crate::requests::sudo`]), the approvers
//! ([`crate::approver`]), the ask socket ([`crate::requests`]) — with the
//! agents' key sockets kept in step with the town. Stopping denies
//! whatever is pending.

use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;

pub use crate::hall::Config;
use crate::hall::Hall;
use crate::protocol::VERSION;

/// Sockets handed over by systemd (`LISTEN_FDS`), by `FileDescriptorName`
/// (`requester`, `approvers`), or in that order when unnamed.
fn activated_sockets() -> HashMap<String, std::os::unix::net::UnixListener> {
    let mut out = HashMap::new();
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .unwrap_or_default()
        .split(':')
        .map(str::to_string)
        .collect();
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    if !for_us || n <= 0 {
        return out;
    }
    for i in 0..n.min(3) {
        let fd = 3 + i;
        // Safety: systemd passes these descriptors open, starting at 3, for this process only.
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        if l.set_nonblocking(true).is_err() {
            continue;
        }
        let name = match names.get(i as usize).map(String::as_str) {
            Some(n @ ("requester" | "approvers" | "ask")) => n.to_string(),
            _ if i == 0 => "requester".into(),
            _ if i == 1 => "approvers".into(),
            _ => "ask".into(),
        };
        out.insert(name, l);
    }
    out
}

/// Bind a socket at `path` with `mode` (and `group`); refuse if a hall answers there already.
fn bind(path: &Path, mode: u32, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a town hall is already listening on {}", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    let gid = match group {
        Some(g) => {
            match nix::unistd::Group::from_name(g).ok().flatten() {
                Some(grp) => Some(grp.gid),
                None => {
                    tracing::warn!("group {g} does not exist: only root can approve (nuketown apply creates it)");
                    None
                }
            }
        }
        None => None,
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), gid)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

/// Tell systemd (`NOTIFY_SOCKET`) about our state; nothing when not under systemd.
pub fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy().into_owned();
    let r = if let Some(abs) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &p)
    };
    if let Err(e) = r {
        tracing::warn!("sd_notify to {p}: {e}");
    }
}

/// A hall with its sockets bound (or handed over by systemd), not yet serving.
pub struct Listening {
    hall: Arc<Hall>,
    requester: UnixListener,
    approver: UnixListener,
    ask: UnixListener,
    /// Socket files we made (and remove when we stop).
    bound: Vec<PathBuf>,
}

/// Bind the sockets (or take systemd's). Call inside a tokio runtime.
pub fn listen(cfg: Config) -> std::io::Result<Listening> {
    // Sockets and files are born private; modes are opened up explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut activated = activated_sockets();
    let mut bound = Vec::new();
    let requester = match activated.remove("requester") {
        Some(l) => UnixListener::from_std(l)?,
        None => {
            let l = bind(&cfg.requester_socket, 0o600, None)?;
            bound.push(cfg.requester_socket.clone());
            l
        }
    };
    let approver = match activated.remove("approvers") {
        Some(l) => UnixListener::from_std(l)?,
        None => {
            let l = bind(&cfg.approver_socket, 0o660, Some(crate::APPROVERS_GROUP))?;
            bound.push(cfg.approver_socket.clone());
            l
        }
    };
    let ask = match activated.remove("ask") {
        Some(l) => UnixListener::from_std(l)?,
        None => {
            let l = bind(&cfg.ask_socket, 0o666, None)?;
            bound.push(cfg.ask_socket.clone());
            l
        }
    };
    // A temporary network rule never outlives the hall that gave it.
    crate::requests::network::reset_rules(&cfg.nft_table, cfg.nftables_file.as_deref());
    let hall = Hall::new(cfg);
    if let Err(e) = hall.loaded() {
        tracing::error!("{e}");
    }
    Ok(Listening {
        hall,
        requester,
        approver,
        ask,
        bound,
    })
}

impl Listening {
    /// The hall behind the sockets.
    pub fn hall(&self) -> Arc<Hall> {
        self.hall.clone()
    }

    /// Serve until `stop` completes; then deny whatever is pending.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let Listening {
            hall,
            requester,
            approver,
            ask,
            bound,
        } = self;
        tracing::info!(
            "town hall (protocol v{VERSION}) listening: requests on {}, approvers on {}",
            hall.cfg.requester_socket.display(),
            hall.cfg.approver_socket.display()
        );
        crate::requests::key_use::sync_key_sockets(&hall);
        crate::gateway::sync(hall.clone()).await;
        sd_notify("READY=1\nSTATUS=accepting requests");
        tokio::pin!(stop);
        // New agents get their key socket without a restart of the hall.
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    crate::requests::key_use::sync_key_sockets(&hall);
                    tokio::spawn(crate::gateway::sync(hall.clone()));
                }
                r = requester.accept() => match r {
                    Ok((s, _)) => { tokio::spawn(crate::requests::sudo::serve(hall.clone(), s)); }
                    Err(e) => tracing::warn!("accept on the requester socket: {e}"),
                },
                r = approver.accept() => match r {
                    Ok((s, _)) => { tokio::spawn(crate::approver::serve(hall.clone(), s)); }
                    Err(e) => tracing::warn!("accept on the approver socket: {e}"),
                },
                r = ask.accept() => match r {
                    Ok((s, _)) => { tokio::spawn(crate::requests::serve_asker(hall.clone(), s)); }
                    Err(e) => tracing::warn!("accept on the ask socket: {e}"),
                },
                _ = &mut stop => break,
            }
        }
        sd_notify("STOPPING=1");
        tracing::info!("the town hall is stopping; denying what is pending");
        drop(requester);
        drop(approver);
        drop(ask);
        crate::requests::key_use::close_key_sockets(&hall);
        crate::gateway::stop(&hall).await;
        for p in &bound {
            let _ = std::fs::remove_file(p);
        }
        hall.state().deny_all("the town hall is stopping, denied");
        // Let the requesters hear their denial (they would deny on the closed connection anyway).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while hall.in_flight.load(Ordering::SeqCst) > 0 {
                let idle = hall.idle.notified();
                if hall.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        })
        .await;
        Ok(())
    }
}

/// Run the hall until SIGTERM or SIGINT; then deny whatever is pending.
pub async fn run(cfg: Config) -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    listen(cfg)?
        .serve(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
}
