//! Who is calling, by the kernel's word: the uid that owns the client end
//! of a loopback TCP connection: asked of the kernel for that one socket
//! (sock_diag over netlink, as `ss` does: constant time however many
//! sockets the host has), else read from /proc/net/tcp{,6} (a scan of every
//! socket, TIME_WAIT ones included).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the socket whose local address is `peer` and whose remote
/// address is `local` (our end), or `None` when no such socket is listed.
pub(crate) fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    if let (IpAddr::V4(l), IpAddr::V4(p)) = (local.ip(), peer.ip()) {
        if let Some(uid) = diag_uid(p, peer.port(), l, local.port()) {
            return Some(uid);
        }
    }
    let files: &[&str] = match (local.ip(), peer.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => &["/proc/net/tcp"],
        _ => &["/proc/net/tcp6", "/proc/net/tcp"],
    };
    files.iter().find_map(|file| {
        let table = std::fs::read_to_string(file).ok()?;
        find_uid(&table, local, peer)
    })
}

/// The uid of the IPv4 TCP socket whose local end is `src:sport` and
/// remote end `dst:dport`, by one exact sock_diag request (no dump).
fn diag_uid(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Option<u32> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    // nlmsghdr (16) + inet_diag_req_v2 (8 + inet_diag_sockid 48).
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_INET as u8;
    req[17] = libc::IPPROTO_TCP as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    let id = 24;
    req[id..id + 2].copy_from_slice(&sport.to_be_bytes());
    req[id + 2..id + 4].copy_from_slice(&dport.to_be_bytes());
    req[id + 4..id + 8].copy_from_slice(&src.octets());
    req[id + 20..id + 24].copy_from_slice(&dst.octets());
    req[id + 40..id + 48].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
                                                       // Safety: plain socket calls on a descriptor owned here, buffers of
                                                       // the lengths given.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        );
        if fd < 0 {
            return None;
        }
        let fd: std::os::fd::OwnedFd = std::os::fd::FromRawFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            raw,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        if sent != req.len() as isize {
            return None;
        }
        let mut buf = [0u8; 512];
        let n = libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 96 {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY {
            return None;
        }
        // inet_diag_msg after the header: family, state, timer, retrans,
        // sockid (48), expires, rqueue, wqueue, then uid.
        let at = 16 + 4 + 48 + 12;
        Some(u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?))
    }
}

/// Searches one /proc/net/tcp table for the client end of our connection.
pub(crate) fn find_uid(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let _slot = fields.next()?;
        let their_local = parse_addr(fields.next()?)?;
        let their_remote = parse_addr(fields.next()?)?;
        if !same(their_local, peer) || !same(their_remote, local) {
            return None;
        }
        // st, tx:rx queue, tr:tm->when, retrnsmt, then uid.
        fields.nth(4)?.parse().ok()
    })
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses the kernel's `HEXADDR:HEXPORT`, the address words in host byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_client_end_not_ours() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:20CF 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1 1\n\
   1: 0100007F:20CF 0100007F:D431 01 00000000:00000000 00:00000000 00000000   999        0 2 1\n\
   2: 0100007F:D431 0100007F:20CF 01 00000000:00000000 00:00000000 00000000  1950        0 3 1\n";
        let local: SocketAddr = "127.0.0.1:8399".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(find_uid(table, local, peer), Some(1950));
            assert_eq!(find_uid(table, peer, local), Some(999));
        }
        assert_eq!(find_uid("garbage\n1: x y z", local, peer), None);
    }

    #[test]
    fn the_kernel_names_the_owner_of_one_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let (IpAddr::V4(p), IpAddr::V4(l)) = (peer.ip(), server.local_addr().unwrap().ip()) else {
            unreachable!()
        };
        let ours = server.local_addr().unwrap().port();
        assert_eq!(
            diag_uid(p, peer.port(), l, ours),
            Some(rustix::process::getuid().as_raw())
        );
        // No such socket: nothing, never a guess.
        assert_eq!(diag_uid(p, peer.port().wrapping_add(1), l, ours), None);
        drop(client);
    }

    #[test]
    fn finds_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let uid = peer_uid(server.local_addr().unwrap(), peer);
        assert_eq!(uid, Some(rustix::process::getuid().as_raw()));
        drop(client);
    }
}
