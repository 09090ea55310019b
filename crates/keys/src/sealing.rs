//! The town's sealing key: 32 random bytes that seal every agent key at rest.
//!
//! It lives apart from the sealed keys: the key store is in the persist dir
//! (backed up, carried between machines), the sealing key on the host —
//! `/var/lib/nuketown/keys/sealing.key` (root's, 0400, in a directory only
//! root may enter; a key an older build made at
//! `/var/lib/nuketown/sealing.key` is still used), or a systemd credential
//! named `nuketown-sealing-key` (`LoadCredentialEncrypted=`, sealed to the
//! machine's TPM where it has one) when the hall runs with one. A copy of the
//! persist dir alone opens no key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::KeyError;

/// Where the sealing key is kept by default.
pub const SEALING_KEY: &str = "/var/lib/nuketown/keys/sealing.key";
/// Where older builds kept it (still used when it is there and the new one is not).
pub const LEGACY_SEALING_KEY: &str = "/var/lib/nuketown/sealing.key";
/// The systemd credential name that, when present, is the sealing key.
pub const CREDENTIAL: &str = "nuketown-sealing-key";

/// The sealing key in memory (zeroed when dropped).
#[derive(Clone)]
pub struct SealingKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

/// Where the sealing key is read from: `$CREDENTIALS_DIRECTORY/nuketown-sealing-key`
/// when systemd hands one over, else `NUKETOWN_SEALING_KEY`, else [`SEALING_KEY`].
pub fn default_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join(CREDENTIAL);
        if p.exists() {
            return p;
        }
    }
    std::env::var_os("NUKETOWN_SEALING_KEY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if !Path::new(SEALING_KEY).exists() && Path::new(LEGACY_SEALING_KEY).exists() {
                LEGACY_SEALING_KEY.into()
            } else {
                SEALING_KEY.into()
            }
        })
}

impl SealingKey {
    /// A sealing key from its bytes (tests).
    pub fn from_bytes(b: [u8; 32]) -> SealingKey {
        SealingKey(Zeroizing::new(b))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Read the key at `path`: a regular file of root's that nobody else may
    /// read, holding exactly 32 bytes.
    pub fn load(path: &Path) -> Result<SealingKey, KeyError> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| KeyError::io(path, e))?;
        let m = f.metadata().map_err(|e| KeyError::io(path, e))?;
        if !m.is_file() || m.uid() != 0 || m.mode() & 0o077 != 0 || m.len() != 32 {
            return Err(KeyError::Invalid(format!(
                "{}: the sealing key must be a regular file of root's, mode 0400 or 0600, of 32 bytes",
                path.display()
            )));
        }
        let mut b = Zeroizing::new([0u8; 32]);
        std::io::Read::read_exact(&mut &f, &mut b[..]).map_err(|e| KeyError::io(path, e))?;
        Ok(SealingKey(b))
    }

    /// Read the key at `path`, making a new one there first if there is none.
    pub fn load_or_create(path: &Path) -> Result<SealingKey, KeyError> {
        if fs::symlink_metadata(path).is_err() {
            if let Some(dir) = path.parent().filter(|d| !d.exists()) {
                // A directory made for the key is root's alone.
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| KeyError::io(dir, e))?;
            }
            let mut b = Zeroizing::new([0u8; 32]);
            crate::random(&mut b[..])?;
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(&b[..])
                        .and_then(|_| f.sync_all())
                        .map_err(|e| KeyError::io(path, e))?;
                }
                // Another process made it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(KeyError::io(path, e)),
            }
        }
        SealingKey::load(path)
    }
}
