//! Who is calling, by the kernel's word: the uid that owns the client end
//! of a loopback TCP connection, read from /proc/net/tcp{,6}.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the socket whose local address is `peer` and whose remote
/// address is `local` (our end), or `None` when no such socket is listed.
pub(crate) fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let files: &[&str] = match (local.ip(), peer.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => &["/proc/net/tcp"],
        _ => &["/proc/net/tcp6", "/proc/net/tcp"],
    };
    files.iter().find_map(|file| {
        let table = std::fs::read_to_string(file).ok()?;
        find_uid(&table, local, peer)
    })
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
    fn finds_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let uid = peer_uid(server.local_addr().unwrap(), peer);
        assert_eq!(uid, Some(rustix::process::getuid().as_raw()));
        drop(client);
    }
}
