//! One way into a Matrix account, for the bridge, the hall's approver and
//! the rooms keeper alike: restore the session saved in the store, or log
//! in (a password, or an access token and device), and save the session.
//!
//! The session holds the account's access token: whoever reads it is that
//! account. So the store is a directory only its owner may enter (0700, made
//! so or tightened), and the session is written 0600 to a new file beside
//! it, then renamed over the old one — never a moment with a readable token
//! or a half-written file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::{Client, SessionMeta, SessionTokens};

/// How an account proves itself.
#[derive(Debug, Clone)]
pub enum Secret {
    /// A file holding the password (trailing newline ignored).
    Password(PathBuf),
    /// A file holding an access token (first line) and its device id (second).
    AccessToken(PathBuf),
}

/// One account to log into.
#[derive(Debug, Clone)]
pub struct Account<'a> {
    /// The Matrix id.
    pub user_id: &'a str,
    /// How it proves itself.
    pub secret: Secret,
    /// The device's display name on a new login.
    pub device_name: &'a str,
    /// The town key that names the secret, for errors (`hall.matrix.passwordFile`).
    pub key: &'a str,
}

/// A client of `homeserver` whose state lives in `store` (made private).
pub async fn client(homeserver: &str, store: &Path) -> Result<Client> {
    private_store(store)?;
    Client::builder()
        .homeserver_url(homeserver)
        .sqlite_store(store.join("store"), None)
        .build()
        .await
        .context("building the Matrix client")
}

/// The saved session in `store`.
pub fn session_file(store: &Path) -> PathBuf {
    store.join("session.json")
}

/// Make `store` (and its parents) and let only its owner in.
pub fn private_store(store: &Path) -> Result<()> {
    std::fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    std::fs::set_permissions(store, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private (0700)", store.display()))
}

/// Write `bytes` to `path` as a new 0600 file, then rename it into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// Log `client` into `account`: the saved session in `store` when there is
/// one, else the secret; a new session is saved (0600, in a 0700 store).
pub async fn login(client: &Client, account: &Account<'_>, store: &Path) -> Result<()> {
    private_store(store)?;
    let saved = session_file(store);
    if let Ok(text) = std::fs::read_to_string(&saved) {
        let session: MatrixSession =
            serde_json::from_str(&text).context("reading the saved Matrix session")?;
        client
            .restore_session(session)
            .await
            .context("restoring the saved Matrix session")?;
        // A session saved by an older build may be readable by others.
        std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o600))?;
        return Ok(());
    }
    match &account.secret {
        Secret::Password(file) => {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("reading {} {}", account.key, file.display()))?;
            client
                .matrix_auth()
                .login_username(account.user_id, password.trim_end_matches(['\n', '\r']))
                .initial_device_display_name(account.device_name)
                .send()
                .await
                .with_context(|| format!("logging in as {}", account.user_id))?;
        }
        Secret::AccessToken(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {} {}", account.key, file.display()))?;
            let mut lines = text.lines();
            let (Some(token), Some(device)) = (lines.next(), lines.next()) else {
                bail!(
                    "{} {}: write the access token on the first line and the device id on the second",
                    account.key,
                    file.display()
                );
            };
            let session = MatrixSession {
                meta: SessionMeta {
                    user_id: account.user_id.try_into()?,
                    device_id: device.trim().into(),
                },
                tokens: SessionTokens {
                    access_token: token.trim().to_string(),
                    refresh_token: None,
                },
            };
            client.restore_session(session).await?;
        }
    }
    if let Some(session) = client.matrix_auth().session() {
        write_private(&saved, &serde_json::to_vec_pretty(&session)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn secrets_are_written_private_in_a_private_store() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("a/b/store");
        private_store(&store).unwrap();
        assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o777, 0o700);
        let f = session_file(&store);
        // Whatever the umask says.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        write_private(&f, b"{\"token\":1}").unwrap();
        write_private(&f, b"{\"token\":2}").unwrap();
        nix::sys::stat::umask(old);
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"token\":2}");
        assert!(!f.with_extension("new").exists());
    }
}
