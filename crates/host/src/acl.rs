//! POSIX ACLs in the kernel's extended-attribute form
//! (`system.posix_acl_access`, `system.posix_acl_default`), so root sets and
//! reads them on a descriptor it holds — never by a path `setfacl` would
//! resolve again.
//!
//! The form: a little-endian `u32` version (2), then one 8-byte entry per
//! line of `getfacl`: `u16` tag, `u16` permission bits, `u32` uid or gid
//! (unused for the owner, owning group, mask and other entries), sorted by
//! tag then id, as the kernel keeps them.

use std::os::fd::AsFd;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

/// The attribute holding a file's access ACL.
pub const ACCESS: &str = "system.posix_acl_access";
/// The attribute holding a directory's default ACL (what new files inherit).
pub const DEFAULT: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tag {
    /// The owner (`user::`).
    UserObj = 0x01,
    /// A named user (`user:ada:`).
    User = 0x02,
    /// The owning group (`group::`).
    GroupObj = 0x04,
    /// A named group (`group:review:`).
    Group = 0x08,
    /// The most any named entry or the owning group may get (`mask::`).
    Mask = 0x10,
    /// Everyone else (`other::`).
    Other = 0x20,
}

/// One entry: a tag, an id for named users and groups, and `rwx` bits (4, 2, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// What it is about.
    pub tag: Tag,
    /// The uid or gid of a named entry.
    pub id: Option<u32>,
    /// Permission bits: 4 read, 2 write, 1 execute (search).
    pub perm: u16,
}

/// `r-x` and friends as bits.
pub const R: u16 = 4;
/// Write.
pub const W: u16 = 2;
/// Execute (for a directory: enter it).
pub const X: u16 = 1;

/// An ACL: its entries, kept sorted as the kernel keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    /// An ACL of these entries (sorted here).
    pub fn new(mut entries: Vec<Entry>) -> Acl {
        entries.sort();
        Acl(entries)
    }

    /// The entries.
    pub fn entries(&self) -> &[Entry] {
        &self.0
    }

    /// The attribute value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.0.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            out.extend_from_slice(&(e.tag as u16).to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.unwrap_or(UNDEFINED_ID).to_le_bytes());
        }
        out
    }

    /// Read an attribute value; `None` when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Acl> {
        let (head, rest) = bytes.split_at_checked(4)?;
        if u32::from_le_bytes(head.try_into().ok()?) != VERSION || rest.len() % 8 != 0 {
            return None;
        }
        let mut entries = Vec::new();
        for e in rest.chunks_exact(8) {
            let tag = match u16::from_le_bytes([e[0], e[1]]) {
                0x01 => Tag::UserObj,
                0x02 => Tag::User,
                0x04 => Tag::GroupObj,
                0x08 => Tag::Group,
                0x10 => Tag::Mask,
                0x20 => Tag::Other,
                _ => return None,
            };
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let named = matches!(tag, Tag::User | Tag::Group);
            entries.push(Entry {
                tag,
                id: named.then_some(id),
                perm,
            });
        }
        Some(Acl::new(entries))
    }

    /// The named user entry for `uid`, if any.
    pub fn user(&self, uid: u32) -> Option<u16> {
        self.0
            .iter()
            .find(|e| e.tag == Tag::User && e.id == Some(uid))
            .map(|e| e.perm)
    }

    /// The named users, with their bits.
    pub fn users(&self) -> impl Iterator<Item = (u32, u16)> + '_ {
        self.0
            .iter()
            .filter(|e| e.tag == Tag::User)
            .filter_map(|e| e.id.map(|id| (id, e.perm)))
    }
}

/// `rwx` letters for bits.
pub fn letters(perm: u16) -> String {
    [(R, 'r'), (W, 'w'), (X, 'x')]
        .iter()
        .map(|&(b, c)| if perm & b != 0 { c } else { '-' })
        .collect()
}

/// Set attribute `name` (an ACL) on the file root holds open.
pub fn set(fd: impl AsFd, name: &str, acl: &Acl) -> Result<(), Errno> {
    rustix::fs::fsetxattr(fd, name, &acl.encode(), XattrFlags::empty())
}

/// The ACL in attribute `name` of the file root holds open; `None` when it
/// has none (only its mode bits).
pub fn get(fd: impl AsFd, name: &str) -> Result<Option<Acl>, Errno> {
    let mut buf = vec![0u8; 4 + 8 * 64];
    loop {
        match rustix::fs::fgetxattr(fd.as_fd(), name, &mut buf[..]) {
            Ok(n) => return Ok(Acl::decode(&buf[..n])),
            Err(Errno::NODATA) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_sorted_and_decodes_back() {
        let acl = Acl::new(vec![
            Entry {
                tag: Tag::Other,
                id: None,
                perm: 0,
            },
            Entry {
                tag: Tag::User,
                id: Some(1101),
                perm: R | X,
            },
            Entry {
                tag: Tag::UserObj,
                id: None,
                perm: R | W | X,
            },
            Entry {
                tag: Tag::User,
                id: Some(1100),
                perm: R | W | X,
            },
            Entry {
                tag: Tag::Mask,
                id: None,
                perm: R | W | X,
            },
            Entry {
                tag: Tag::GroupObj,
                id: None,
                perm: 0,
            },
        ]);
        let bytes = acl.encode();
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        // user:: first, then the named users by uid.
        assert_eq!(&bytes[4..12], &[1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&bytes[12..20], &[2, 0, 7, 0, 0x4c, 0x04, 0, 0]);
        assert_eq!(Acl::decode(&bytes), Some(acl.clone()));
        assert_eq!(acl.user(1101), Some(R | X));
        assert_eq!(acl.user(1102), None);
        assert_eq!(letters(R | X), "r-x");
    }

    #[test]
    fn refuses_what_is_not_an_acl() {
        assert_eq!(Acl::decode(b""), None);
        assert_eq!(Acl::decode(&[1, 0, 0, 0]), None);
        assert_eq!(Acl::decode(&[2, 0, 0, 0, 1, 0, 7]), None);
        assert_eq!(Acl::decode(&[2, 0, 0, 0, 0x40, 0, 7, 0, 0, 0, 0, 0]), None);
    }
}
