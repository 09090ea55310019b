//! The key store: each agent's private key sealed at rest, its public half
//! beside it, and whether its use is paused.
//!
//! Layout, in a directory only root can enter (`persistDir/agents/.nuketown-keys`,
//! 0700, root's; agents cannot plant a link there):
//!
//! ```text
//! <store>/<agent>/id_ed25519.sealed   the private key, sealed (0600)
//! <store>/<agent>/id_ed25519.pub      its public half (0644)
//! <store>/<agent>/paused              present: every use is refused
//! <store>/<agent>/retired/<time>.pub  public halves rotated away
//! <store>/<agent>/credentials/<name>.sealed  a credential the gateway adds
//!                                           to the agent's requests (0600)
//! ```
//!
//! A sealed key is the OpenSSH private key encrypted with ChaCha20-Poly1305
//! under the town's sealing key (see [`crate::sealing`]), the agent's name as
//! associated data: a sealed file copied to another agent's slot does not
//! open. Nothing here ever writes a private key in the clear, and no function
//! returns one outside this crate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::sealing::SealingKey;
use crate::KeyError;

/// The key store's directory name, in `persistDir/agents`.
pub const STORE_DIR: &str = ".nuketown-keys";
/// The sealed private key's file name.
pub const SEALED: &str = "id_ed25519.sealed";
/// The public key's file name.
pub const PUBLIC: &str = "id_ed25519.pub";
/// The pause marker's file name.
pub const PAUSED: &str = "paused";
/// A plain private key left by an older nuketown (imported, then removed).
pub const PLAIN: &str = "id_ed25519";

const MAGIC: &[u8] = b"nuketown-sealed-key-v1\n";

/// The agents' keys, sealed with the town's key.
pub struct Store {
    dir: PathBuf,
    sealing: SealingKey,
}

/// The directory of an agent's sealed credentials.
pub const CREDENTIALS: &str = "credentials";
/// The largest credential the store takes (a token, an API key).
pub const MAX_CREDENTIAL: usize = 16 * 1024;
const CREDENTIAL_MAGIC: &[u8] = b"nuketown-sealed-credential-v1\n";

fn credential_aad(agent: &str, name: &str) -> Vec<u8> {
    format!("nuketown credential {name} of {agent}").into_bytes()
}

fn check_credential_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!(
            "{name:?} is not a credential name"
        )))
    }
}

fn aad(agent: &str) -> Vec<u8> {
    format!("nuketown key of {agent}").into_bytes()
}

fn check_name(agent: &str) -> Result<(), KeyError> {
    let ok = !agent.is_empty()
        && agent.len() <= 32
        && agent
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !agent.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!("{agent:?} is not an agent name")))
    }
}

/// Read a root-owned regular file without following a link.
fn read_root_file(path: &Path, max: u64) -> Result<Option<Vec<u8>>, KeyError> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyError::io(path, e)),
    };
    let m = f.metadata().map_err(|e| KeyError::io(path, e))?;
    if !m.is_file() || m.uid() != 0 || m.len() > max {
        return Err(KeyError::Invalid(format!(
            "{}: not a root-owned regular file of at most {max} bytes; refusing it",
            path.display()
        )));
    }
    let mut buf = Vec::with_capacity(m.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(&f, max), &mut buf)
        .map_err(|e| KeyError::io(path, e))?;
    Ok(Some(buf))
}

/// Write a file by a fresh name and rename it over `path` (never following a link).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let dir = path.parent().expect("store paths have a parent");
    let tmp = dir.join(format!(
        ".{}.new-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| KeyError::io(&tmp, e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|_| f.write_all(bytes))
        .and_then(|_| f.sync_all())
        .map_err(|e| KeyError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| KeyError::io(path, e))
}

fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() && m.uid() == 0 => {
            if m.mode() & 0o7777 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| KeyError::io(dir, e))?;
            }
            Ok(())
        }
        Ok(_) => Err(KeyError::Invalid(format!(
            "{}: not a directory of root's; the key store refuses it",
            dir.display()
        ))),
        Err(_) => fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| KeyError::io(dir, e)),
    }
}

impl Store {
    /// The store in `dir` (created 0700 on first write), sealed with `sealing`.
    pub fn new(dir: &Path, sealing: SealingKey) -> Store {
        Store {
            dir: dir.to_path_buf(),
            sealing,
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one agent's keys.
    pub fn agent_dir(&self, agent: &str) -> PathBuf {
        self.dir.join(agent)
    }

    /// `magic`, a fresh nonce, and `msg` sealed under the town's key with `aad`.
    fn seal_bytes(&self, magic: &[u8], aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let cipher = ChaCha20Poly1305::new(self.sealing.bytes().into());
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad })
            .map_err(|_| KeyError::Invalid("sealing failed".into()))?;
        Ok([magic, &nonce[..], &sealed].concat())
    }

    /// What [`Store::seal_bytes`] sealed, or `broken` when it does not open.
    fn unseal_bytes(
        &self,
        magic: &[u8],
        aad: &[u8],
        bytes: &[u8],
        broken: impl Fn() -> KeyError,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let rest = bytes.strip_prefix(magic).ok_or_else(&broken)?;
        if rest.len() < 12 {
            return Err(broken());
        }
        let (nonce, sealed) = rest.split_at(12);
        let cipher = ChaCha20Poly1305::new(self.sealing.bytes().into());
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map(Zeroizing::new)
            .map_err(|_| broken())
    }

    fn seal(&self, agent: &str, key: &PrivateKey) -> Result<Vec<u8>, KeyError> {
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        self.seal_bytes(MAGIC, &aad(agent), pem.as_bytes())
    }

    fn unseal(&self, agent: &str, bytes: &[u8]) -> Result<PrivateKey, KeyError> {
        let broken = || {
            KeyError::Invalid(format!(
                "{agent}'s sealed key does not open with this town's sealing key (another town's key, or the file was changed)"
            ))
        };
        let pem = self.unseal_bytes(MAGIC, &aad(agent), bytes, broken)?;
        PrivateKey::from_openssh(&pem[..]).map_err(|e| KeyError::Invalid(e.to_string()))
    }

    fn put(&self, agent: &str, key: &PrivateKey) -> Result<PublicKey, KeyError> {
        check_name(agent)?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(KeyError::Invalid(format!(
                "{agent}'s key is {}; the town holds ed25519 keys only (make one with `ssh-keygen -t ed25519`)",
                key.algorithm()
            )));
        }
        if key.is_encrypted() {
            return Err(KeyError::Invalid(format!(
                "{agent}'s key is protected by a passphrase; give the town the key without one (it is sealed at rest by the town)"
            )));
        }
        ensure_dir(&self.dir)?;
        let dir = self.agent_dir(agent);
        ensure_dir(&dir)?;
        let sealed = self.seal(agent, key)?;
        let public = key.public_key().clone();
        let line = public
            .to_openssh()
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        write_atomic(&dir.join(SEALED), &sealed, 0o600)?;
        write_atomic(&dir.join(PUBLIC), format!("{line}\n").as_bytes(), 0o644)?;
        Ok(public)
    }

    /// A new ed25519 key for `agent`, sealed; returns its public half.
    pub fn generate(&self, agent: &str, comment: &str) -> Result<PublicKey, KeyError> {
        let mut rng = ssh_key::rand_core::OsRng;
        let mut key = PrivateKey::random(&mut rng, Algorithm::Ed25519)
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        key.set_comment(comment);
        self.put(agent, &key)
    }

    /// Take an OpenSSH private key (unencrypted, ed25519) into the store for `agent`.
    pub fn import(&self, agent: &str, openssh: &[u8]) -> Result<PublicKey, KeyError> {
        let key = PrivateKey::from_openssh(openssh)
            .map_err(|e| KeyError::Invalid(format!("not an OpenSSH private key: {e}")))?;
        self.put(agent, &key)
    }

    /// The public half of `agent`'s key, if it has one.
    pub fn public(&self, agent: &str) -> Result<Option<PublicKey>, KeyError> {
        check_name(agent)?;
        let p = self.agent_dir(agent).join(PUBLIC);
        match read_root_file(&p, 64 * 1024)? {
            None => Ok(None),
            Some(b) => PublicKey::from_openssh(String::from_utf8_lossy(&b).trim())
                .map(Some)
                .map_err(|e| KeyError::Invalid(format!("{}: {e}", p.display()))),
        }
    }

    /// Whether `agent` has a sealed key.
    pub fn has_key(&self, agent: &str) -> bool {
        check_name(agent).is_ok() && self.agent_dir(agent).join(SEALED).is_file()
    }

    /// Whether the sealed key opens and matches the published public half.
    pub fn check(&self, agent: &str) -> Result<PublicKey, KeyError> {
        let key = self.private(agent)?;
        Ok(key.public_key().clone())
    }

    /// The private key, unsealed for one use (the crate's signer only).
    pub(crate) fn private(&self, agent: &str) -> Result<PrivateKey, KeyError> {
        check_name(agent)?;
        let p = self.agent_dir(agent).join(SEALED);
        let bytes =
            read_root_file(&p, 64 * 1024)?.ok_or_else(|| KeyError::NoKey(agent.to_string()))?;
        self.unseal(agent, &bytes)
    }

    /// Whether every use of `agent`'s key is refused now.
    pub fn paused(&self, agent: &str) -> bool {
        check_name(agent).is_err()
            || fs::symlink_metadata(self.agent_dir(agent).join(PAUSED)).is_ok()
    }

    /// Refuse every use of `agent`'s key from now on (until [`Store::resume`]).
    pub fn pause(&self, agent: &str) -> Result<(), KeyError> {
        check_name(agent)?;
        ensure_dir(&self.dir)?;
        ensure_dir(&self.agent_dir(agent))?;
        write_atomic(&self.agent_dir(agent).join(PAUSED), b"paused\n", 0o600)
    }

    /// Allow `agent`'s key to be used again.
    pub fn resume(&self, agent: &str) -> Result<(), KeyError> {
        check_name(agent)?;
        let p = self.agent_dir(agent).join(PAUSED);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(KeyError::io(&p, e)),
            _ => Ok(()),
        }
    }

    /// Replace `agent`'s key by a new one; returns (old, new) public halves.
    /// The old public half is kept under `retired/` so audits can name it.
    pub fn rotate(
        &self,
        agent: &str,
        comment: &str,
    ) -> Result<(Option<PublicKey>, PublicKey), KeyError> {
        let old = self.public(agent)?;
        if let Some(old) = &old {
            let retired = self.agent_dir(agent).join("retired");
            ensure_dir(&retired)?;
            let line = old
                .to_openssh()
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            write_atomic(
                &retired.join(format!("{stamp}.pub")),
                format!("{line}\n").as_bytes(),
                0o644,
            )?;
        }
        let new = self.generate(agent, comment)?;
        Ok((old, new))
    }

    fn credential_path(&self, agent: &str, name: &str) -> Result<PathBuf, KeyError> {
        check_name(agent)?;
        check_credential_name(name)?;
        Ok(self
            .agent_dir(agent)
            .join(CREDENTIALS)
            .join(format!("{name}.sealed")))
    }

    /// Seal `secret` as `agent`'s credential `name` (surrounding white space,
    /// a file's final newline, is not part of it). The agent's name and the
    /// credential's are the associated data: a sealed file copied to another
    /// slot does not open.
    pub fn put_credential(&self, agent: &str, name: &str, secret: &[u8]) -> Result<(), KeyError> {
        let path = self.credential_path(agent, name)?;
        let secret = secret.trim_ascii();
        if secret.is_empty() || secret.len() > MAX_CREDENTIAL {
            return Err(KeyError::Invalid(format!(
                "{agent}'s credential {name} is {} bytes; a credential is 1 to {MAX_CREDENTIAL} bytes (a token, an API key)",
                secret.len()
            )));
        }
        if secret.iter().any(|b| b.is_ascii_control()) {
            return Err(KeyError::Invalid(format!(
                "{agent}'s credential {name} has control characters (more than one line?); it goes into an HTTP header as it is"
            )));
        }
        ensure_dir(&self.dir)?;
        ensure_dir(&self.agent_dir(agent))?;
        ensure_dir(&self.agent_dir(agent).join(CREDENTIALS))?;
        let sealed = self.seal_bytes(CREDENTIAL_MAGIC, &credential_aad(agent, name), secret)?;
        write_atomic(&path, &sealed, 0o600)
    }

    /// `agent`'s credential `name`, unsealed (for the gateway's
    /// configuration, which only the hall hands over), if it has one.
    pub fn credential(
        &self,
        agent: &str,
        name: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
        let path = self.credential_path(agent, name)?;
        let Some(bytes) = read_root_file(&path, 64 * 1024)? else {
            return Ok(None);
        };
        let broken = || {
            KeyError::Invalid(format!(
                "{agent}'s sealed credential {name} does not open with this town's sealing key (another town's, or the file was changed); apply the town again to import it"
            ))
        };
        self.unseal_bytes(
            CREDENTIAL_MAGIC,
            &credential_aad(agent, name),
            &bytes,
            broken,
        )
        .map(Some)
    }

    /// Whether `agent`'s sealed credential `name` is `secret` (as
    /// [`Store::put_credential`] would seal it).
    pub fn credential_is(&self, agent: &str, name: &str, secret: &[u8]) -> bool {
        matches!(self.credential(agent, name), Ok(Some(s)) if s.as_slice() == secret.trim_ascii())
    }

    /// The names of `agent`'s sealed credentials.
    pub fn credential_names(&self, agent: &str) -> Vec<String> {
        let Ok(dir) = self
            .credential_path(agent, "x")
            .map(|p| p.with_file_name(""))
        else {
            return Vec::new();
        };
        let mut names: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let n = n.strip_suffix(".sealed")?.to_string();
                check_credential_name(&n).ok().map(|_| n)
            })
            .collect();
        names.sort();
        names
    }

    /// Forget `agent`'s credential `name` (no longer declared).
    pub fn remove_credential(&self, agent: &str, name: &str) -> Result<(), KeyError> {
        let p = self.credential_path(agent, name)?;
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(KeyError::io(&p, e)),
            _ => Ok(()),
        }
    }

    /// Forget `agent`'s keys entirely (the agent left the town, `--purge`).
    pub fn remove(&self, agent: &str) -> Result<(), KeyError> {
        check_name(agent)?;
        let d = self.agent_dir(agent);
        match fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(KeyError::io(&d, e)),
            _ => Ok(()),
        }
    }
}

/// `SHA256:…`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(&d.path().join("keys"), SealingKey::from_bytes([7u8; 32]));
        (d, s)
    }

    #[test]
    fn a_generated_key_is_sealed_and_opens_only_for_its_agent() {
        let (_d, s) = store();
        let public = s.generate("ada", "ada@town").unwrap();
        assert_eq!(
            s.public("ada").unwrap().unwrap().key_data(),
            public.key_data()
        );
        let sealed = fs::read(s.agent_dir("ada").join(SEALED)).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("OPENSSH PRIVATE KEY"));
        assert_eq!(s.check("ada").unwrap().key_data(), public.key_data());
        // The same sealed bytes in vox's slot do not open.
        fs::create_dir_all(s.agent_dir("vox")).unwrap();
        fs::write(s.agent_dir("vox").join(SEALED), &sealed).unwrap();
        assert!(s.check("vox").is_err());
        // Another town's sealing key does not open it either.
        let other = Store::new(s.dir(), SealingKey::from_bytes([8u8; 32]));
        assert!(other.check("ada").is_err());
    }

    #[test]
    fn credentials_are_sealed_per_agent_and_name() {
        let (_d, s) = store();
        s.put_credential("ada", "anthropic", b"sk-ant-secret\n")
            .unwrap();
        let raw = fs::read(s.agent_dir("ada").join("credentials/anthropic.sealed")).unwrap();
        assert!(!raw.windows(13).any(|w| w == b"sk-ant-secret"));
        assert_eq!(
            s.credential("ada", "anthropic")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"sk-ant-secret"
        );
        assert!(s.credential_is("ada", "anthropic", b"sk-ant-secret"));
        assert!(!s.credential_is("ada", "anthropic", b"other"));
        assert_eq!(s.credential_names("ada"), ["anthropic"]);
        // Copied to another agent's slot, or another name: it does not open.
        fs::create_dir_all(s.agent_dir("vox").join("credentials")).unwrap();
        fs::copy(
            s.agent_dir("ada").join("credentials/anthropic.sealed"),
            s.agent_dir("vox").join("credentials/anthropic.sealed"),
        )
        .unwrap();
        assert!(s.credential("vox", "anthropic").is_err());
        assert!(s.put_credential("ada", "x", b"two\nlines").is_err());
        assert!(s.put_credential("ada", "../x", b"k").is_err());
        assert!(s.put_credential("ada", "x", b"  ").is_err());
        s.remove_credential("ada", "anthropic").unwrap();
        assert!(s.credential("ada", "anthropic").unwrap().is_none());
    }

    #[test]
    fn pause_resume_and_rotate() {
        let (_d, s) = store();
        let first = s.generate("ada", "c").unwrap();
        assert!(!s.paused("ada"));
        s.pause("ada").unwrap();
        assert!(s.paused("ada"));
        s.resume("ada").unwrap();
        assert!(!s.paused("ada"));
        let (old, new) = s.rotate("ada", "c").unwrap();
        assert_eq!(old.unwrap().key_data(), first.key_data());
        assert_ne!(new.key_data(), first.key_data());
        assert_eq!(s.check("ada").unwrap().key_data(), new.key_data());
    }

    #[test]
    fn names_that_are_not_agents_are_refused() {
        let (_d, s) = store();
        for bad in ["", "../x", "a/b", "-x", "ADA"] {
            assert!(s.generate(bad, "c").is_err(), "{bad}");
            assert!(s.paused(bad));
        }
    }
}
