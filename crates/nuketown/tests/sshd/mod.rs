//! A throw-away sshd on 127.0.0.1 for tests (the openssh-server package from
//! scripts/deps.sh; never the system's sshd or its configuration).
#![allow(dead_code)]

use std::fs;
use std::time::Duration;

/// How long sshd may take to listen.
const DEADLINE: Duration = Duration::from_secs(60);

/// A throw-away sshd on 127.0.0.1 with its own configuration and host key,
/// never the system's; killed on drop.
pub struct Sshd {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its host key, `TYPE BASE64`.
    pub host_key: String,
}

impl Sshd {
    /// Start it in `dir`, letting `user` in with the key `authorized`.
    pub fn start(dir: &std::path::Path, user: &str, authorized: &str) -> Sshd {
        fs::create_dir_all(dir).unwrap();
        let key = dir.join("host_key");
        let o = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(o.status.success());
        let host_key = fs::read_to_string(key.with_extension("pub")).unwrap();
        let host_key = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        fs::write(dir.join("authorized_keys"), format!("{authorized}\n")).unwrap();
        // A free port: the kernel picks one, we hand it to sshd.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nAllowUsers {user}\nLogLevel VERBOSE\n",
                key.display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory (the package makes it when it starts the system's).
        fs::create_dir_all("/run/sshd").unwrap();
        let mut child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Ready when it says so; its log is drained to the end so it never blocks on a full pipe.
        let err = child.stderr.take().unwrap();
        let (ready, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("Server listening on 127.0.0.1") {
                    let _ = ready.send(());
                }
            }
        });
        listening
            .recv_timeout(DEADLINE)
            .expect("sshd never said it was listening");
        Sshd {
            child,
            port,
            host_key,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
