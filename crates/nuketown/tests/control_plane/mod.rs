//! A real Kubernetes control plane for the cloud tests, on 127.0.0.1: etcd,
//! kube-apiserver, and as a test asks, kube-controller-manager,
//! kube-scheduler and kwok — the binaries `scripts/k8s.sh` builds from
//! their Go modules at the versions pinned in `scripts/k8s-versions`.
//!
//! What is real: TLS everywhere with a CA made for the run (etcd's clients,
//! the API server, the controller manager's and scheduler's serving ports),
//! client certificates and service-account tokens as identities,
//! `--authorization-mode=Node,RBAC`, Pod Security admission (on by default)
//! and the rest of the default admission chain, the real controllers and
//! scheduler. What is not: no kubelet (kwok marks pods Running on nodes it
//! fakes; no container runs, no image is pulled), no CNI (a NetworkPolicy is
//! stored, never enforced), no volume is mounted (claims bind to
//! PersistentVolumes the test makes), no cloud KMS or workload identity.
//!
//! Readiness is polled with deadlines (`/readyz`, `/healthz`, the objects a
//! test waits for), never slept on. Every process is killed and the
//! directory removed on drop, also when a test fails; the children also die
//! with the test process (`PR_SET_PDEATHSIG`). Where the binaries are absent
//! the tests skip with a message, except in CI (`CI` set), where they fail.
#![allow(dead_code)]

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A cloud town's manifests as the library renders them, as JSON.
pub fn rendered(text: &str) -> Vec<Value> {
    let town = nuketown_cloud::load(text, nuketown_town::Format::Toml, "town.toml").unwrap();
    nuketown_cloud::render(&town, None)
        .unwrap()
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect()
}

/// The versions `scripts/k8s.sh` builds (and the directory it installs them in).
const VERSIONS: &str = include_str!("../../../../scripts/k8s-versions");

/// How long the control plane, or anything a test waits for, may take.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Control planes take turns: on two cores, two at once only slow both.
const SERIAL_LOCK: &str = "/tmp/nuketown-control-plane.lock";

/// A pinned version from `scripts/k8s-versions`, e.g. `version("KUBERNETES")`.
pub fn version(key: &str) -> String {
    VERSIONS
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("scripts/k8s-versions has no {key}"))
        .trim()
        .to_string()
}

/// Where the binaries are: `$NUKETOWN_K8S_DIR`, else `/opt/nuketown-k8s/<set>`.
pub fn install_dir() -> PathBuf {
    std::env::var_os("NUKETOWN_K8S_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/opt/nuketown-k8s").join(version("K8S_SET")))
}

/// The install directory when the control plane is there; `None` (and a
/// message saying how to get it) when not. In CI its absence fails the test.
pub fn available(test: &str) -> Option<PathBuf> {
    // The test process links two TLS providers (the workspace's): choose.
    nuketown_operator::tls_provider();
    let dir = install_dir();
    let parts = [
        "complete",
        "bin/etcd",
        "bin/kube-apiserver",
        "bin/kube-controller-manager",
        "bin/kube-scheduler",
        "bin/kubectl",
        "bin/kwok",
        "kwok-stages.yaml",
        "argocd/install.yaml",
    ];
    if parts.iter().all(|p| dir.join(p).exists()) {
        return Some(dir);
    }
    let msg = format!(
        "{test}: skipped: no Kubernetes control plane in {} (build it with `bash scripts/k8s.sh`, \
         which needs Go and the Go module proxy; scripts/deps.sh runs it)",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI must run these tests");
    }
    eprintln!("{msg}");
    None
}

/// Which parts to run beside etcd and the API server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    /// kube-controller-manager (Deployments → pods, volume binding, garbage collection…).
    pub controller_manager: bool,
    /// kube-scheduler.
    pub scheduler: bool,
    /// kwok, faking the kubelets of the nodes labelled `type=kwok`.
    pub kwok: bool,
    /// The API server's audit log (`audit.jsonl`, every request at the
    /// Metadata level): who called what, as the server saw it.
    pub audit: bool,
}

impl Parts {
    /// Everything.
    pub fn all() -> Parts {
        Parts {
            controller_manager: true,
            scheduler: true,
            kwok: true,
            audit: false,
        }
    }
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane; stopped and removed on drop.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// A kubeconfig of `system:masters` (for the test's own setup and checks only).
    pub admin: PathBuf,
    /// The CA every certificate is signed by (the API server's too).
    pub ca: PathBuf,
    procs: Vec<Proc>,
    _serial: nix::fcntl::Flock<File>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn must(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: cannot run: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A certificate signed by the run's CA, as `openssl` makes it.
struct Pki<'a> {
    dir: &'a Path,
}

impl Pki<'_> {
    fn ca(&self) {
        must(
            Command::new("openssl")
                .current_dir(self.dir)
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
                .args(["-keyout", "ca.key", "-out", "ca.crt"])
                .args(["-subj", "/CN=nuketown-test-ca"]),
        );
    }

    /// `name.crt`/`name.key` for `subject`; `server` adds 127.0.0.1 and the
    /// in-cluster names as SANs and the serverAuth usage.
    fn leaf(&self, name: &str, subject: &str, server: bool) {
        let ext = self.dir.join(format!("{name}.ext"));
        let text = if server {
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n\
             extendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n"
        } else {
            "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n"
        };
        fs::write(&ext, text).unwrap();
        must(
            Command::new("openssl")
                .current_dir(self.dir)
                .args([
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-keyout", &format!("{name}.key")])
                .args(["-out", &format!("{name}.csr"), "-subj", subject]),
        );
        must(
            Command::new("openssl")
                .current_dir(self.dir)
                .args(["x509", "-req", "-in", &format!("{name}.csr")])
                .args([
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                ])
                .args(["-out", &format!("{name}.crt"), "-extfile"])
                .arg(&ext),
        );
    }
}

/// A kubeconfig for `server`, trusting `ca`, with a client certificate or a bearer token.
pub fn kubeconfig(server: &str, ca: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: u}}\n\
         current-context: test\nusers:\n- name: u\n  user:\n{user}",
        ca.display()
    )
}

impl ControlPlane {
    /// Start etcd and the API server (and `parts`), wait until the API
    /// server is ready. `None` when the binaries are absent (skip).
    pub fn start(test: &str, parts: Parts) -> Option<ControlPlane> {
        let install = available(test)?;
        let serial = {
            let f = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(SERIAL_LOCK)
                .unwrap();
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .unwrap()
        };
        let dir = tempfile::Builder::new()
            .prefix("nuketown-k8s-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        let pki = Pki { dir: &d };
        pki.ca();
        pki.leaf("etcd", "/CN=etcd", true);
        pki.leaf("apiserver", "/CN=kube-apiserver", true);
        pki.leaf("apiserver-etcd", "/CN=kube-apiserver-etcd-client", false);
        pki.leaf("admin", "/O=system:masters/CN=nuketown-test-admin", false);
        pki.leaf(
            "controller-manager",
            "/CN=system:kube-controller-manager",
            true,
        );
        pki.leaf("scheduler", "/CN=system:kube-scheduler", true);
        // kwok fakes every kubelet with one identity; the Node authorizer
        // would hold it to one node, so it is an administrator (it is the
        // test's stand-in for the nodes, not a part under test).
        pki.leaf("kwok", "/O=system:masters/CN=kwok", false);
        must(
            Command::new("openssl")
                .current_dir(&d)
                .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-out", "sa.key"]),
        );
        must(
            Command::new("openssl")
                .current_dir(&d)
                .args(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]),
        );

        let ca = d.join("ca.crt");
        let api_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        let cert_user = |name: &str| {
            format!(
                "    client-certificate: {}\n    client-key: {}\n",
                d.join(format!("{name}.crt")).display(),
                d.join(format!("{name}.key")).display()
            )
        };
        for name in ["admin", "controller-manager", "scheduler", "kwok"] {
            fs::write(
                d.join(format!("{name}.kubeconfig")),
                kubeconfig(&server, &ca, &cert_user(name)),
            )
            .unwrap();
        }
        let mut cp = ControlPlane {
            bin: install.join("bin"),
            server,
            admin: d.join("admin.kubeconfig"),
            ca: ca.clone(),
            procs: Vec::new(),
            _serial: serial,
            dir,
        };

        let (etcd_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("https://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let p = |f: &str| d.join(f).display().to_string();
        cp.spawn(
            "etcd",
            &[
                "--name=test",
                &format!("--data-dir={}", p("etcd-data")),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=test={peer_url}"),
                &format!("--cert-file={}", p("etcd.crt")),
                &format!("--key-file={}", p("etcd.key")),
                &format!("--trusted-ca-file={}", p("ca.crt")),
                "--client-cert-auth",
                // A test's data dies with it: no fsync (the one shortcut).
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        );
        let mut audit = Vec::new();
        if parts.audit {
            fs::write(
                d.join("audit-policy.yaml"),
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
            )
            .unwrap();
            audit.push(format!("--audit-policy-file={}", p("audit-policy.yaml")));
            audit.push(format!("--audit-log-path={}", p("audit.jsonl")));
            audit.push("--audit-log-format=json".to_string());
            audit.push("--audit-log-mode=blocking".to_string());
        }
        let audit: Vec<&str> = audit.iter().map(String::as_str).collect();
        cp.spawn(
            "kube-apiserver",
            &[
                &format!("--etcd-servers={etcd_url}"),
                &format!("--etcd-cafile={}", p("ca.crt")),
                &format!("--etcd-certfile={}", p("apiserver-etcd.crt")),
                &format!("--etcd-keyfile={}", p("apiserver-etcd.key")),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--cert-dir={}", p("apiserver-certs")),
                &format!("--tls-cert-file={}", p("apiserver.crt")),
                &format!("--tls-private-key-file={}", p("apiserver.key")),
                &format!("--client-ca-file={}", p("ca.crt")),
                "--authorization-mode=Node,RBAC",
                // PodSecurity is in the default admission chain; named here
                // so the test says what it relies on.
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                "--anonymous-auth=false",
                "--allow-privileged=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                &format!("--service-account-key-file={}", p("sa.pub")),
                &format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24",
                "--profiling=false",
            ]
            .iter()
            .copied()
            .chain(audit)
            .collect::<Vec<_>>(),
        );
        cp.wait_ready("kube-apiserver", api_port, "/readyz", &cp.admin.clone());

        let serving = |name: &str, port: u16| {
            vec![
                format!("--kubeconfig={}", p(&format!("{name}.kubeconfig"))),
                format!(
                    "--authentication-kubeconfig={}",
                    p(&format!("{name}.kubeconfig"))
                ),
                format!(
                    "--authorization-kubeconfig={}",
                    p(&format!("{name}.kubeconfig"))
                ),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={}", p(&format!("{name}.crt"))),
                format!("--tls-private-key-file={}", p(&format!("{name}.key"))),
                "--leader-elect=false".to_string(),
            ]
        };
        if parts.controller_manager {
            let port = free_port();
            let mut args = serving("controller-manager", port);
            args.extend([
                // Each controller as its own service account, under the bootstrap RBAC.
                "--use-service-account-credentials=true".to_string(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                "--cluster-name=nuketown-test".to_string(),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cp.spawn("kube-controller-manager", &args);
            cp.wait_ready(
                "kube-controller-manager",
                port,
                "/healthz",
                &cp.admin.clone(),
            );
        }
        if parts.scheduler {
            let port = free_port();
            let args = serving("scheduler", port);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cp.spawn("kube-scheduler", &args);
            cp.wait_ready("kube-scheduler", port, "/healthz", &cp.admin.clone());
        }
        if parts.kwok {
            let port = free_port();
            cp.spawn(
                "kwok",
                &[
                    &format!("--kubeconfig={}", p("kwok.kubeconfig")),
                    &format!("--config={}", install.join("kwok-stages.yaml").display()),
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-label-selector=type=kwok",
                    "--cidr=10.244.0.0/16",
                    "--node-ip=10.240.0.1",
                    &format!("--server-address=127.0.0.1:{port}"),
                ],
            );
        }
        Some(cp)
    }

    fn spawn(&mut self, name: &'static str, args: &[&str]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let mut cmd = Command::new(self.bin.join(name));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Die with the test, even when it is killed before drop runs.
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start: {e}", self.bin.join(name).display()));
        self.procs.push(Proc { name, child, log });
    }

    /// The last lines of a part's log (for failure messages).
    pub fn log_tail(&self, name: &str) -> String {
        let log = self.dir.path().join(format!("{name}.log"));
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn check_alive(&mut self) {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                let text = fs::read_to_string(&p.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                panic!(
                    "{} exited ({status}):\n{}",
                    p.name,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }

    fn wait_ready(&mut self, name: &str, port: u16, path: &str, kubeconfig: &Path) {
        let started = Instant::now();
        let url = format!("https://127.0.0.1:{port}{path}");
        loop {
            self.check_alive();
            // Verified against the run's CA, with the admin's identity.
            let o = Command::new(self.bin.join("kubectl"))
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["--server", &format!("https://127.0.0.1:{port}")])
                .args(["--request-timeout=5s", "get", "--raw", path])
                .output()
                .unwrap();
            if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok" {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{name} not ready at {url} after {DEADLINE:?}: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                self.log_tail(name)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A path in the run's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The `kubectl` built with the control plane.
    pub fn kubectl_bin(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// `kubectl ARGS` with `kubeconfig`, `stdin` fed in.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut c = Command::new(self.kubectl_bin());
        c.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            let mut i = child.stdin.take().unwrap();
            let s = s.to_string();
            std::thread::spawn(move || {
                let _ = i.write_all(s.as_bytes());
            });
        }
        child.wait_with_output().unwrap()
    }

    /// `kubectl ARGS` as the administrator.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.admin, args, None)
    }

    /// `kubectl ARGS` as the administrator; panics (with its output) unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `kubectl apply --server-side -f -` of `yaml` as the administrator,
    /// as field manager `manager` (Argo CD's is `argocd-controller`).
    pub fn apply_as(&self, manager: &str, yaml: &str) -> Output {
        let manager = format!("--field-manager={manager}");
        self.kubectl_with(
            &self.admin,
            &["apply", "--server-side", &manager, "-f", "-"],
            Some(yaml),
        )
    }

    /// `kubectl apply --server-side -f -` of `yaml` as the administrator; must succeed.
    pub fn apply(&self, yaml: &str) -> String {
        let o = self.apply_as("nuketown-test", yaml);
        assert!(
            o.status.success(),
            "kubectl apply: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// An object as JSON (`kubectl get -o json`), `None` when it is not there.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let mut args = vec!["get", kind, name, "-o", "json"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let o = self.kubectl(&args);
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("NotFound"), "kubectl get {kind} {name}: {err}");
            return None;
        }
        Some(serde_json::from_slice(&o.stdout).unwrap())
    }

    /// A list (`kubectl get KIND -o json` with extra args) as its items.
    pub fn list(&self, kind: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["get", kind, "-o", "json"];
        args.extend_from_slice(extra);
        let out = self.kubectl_ok(&args);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Poll `f` until it gives `Some`, or fail after [`DEADLINE`] saying what was awaited.
    pub fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&ControlPlane) -> Option<T>) -> T {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            if let Some(t) = f(self) {
                return t;
            }
            self.check_alive();
            if started.elapsed() > DEADLINE {
                let pods = self.kubectl(&["get", "pods", "-A", "-o", "wide"]);
                let events = self.kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]);
                panic!(
                    "waited {DEADLINE:?} for {what}\n--- pods:\n{}\n--- events:\n{}\n--- kube-scheduler:\n{}\n--- kwok:\n{}",
                    String::from_utf8_lossy(&pods.stdout),
                    String::from_utf8_lossy(&events.stdout),
                    self.log_tail("kube-scheduler"),
                    self.log_tail("kwok")
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// A kubeconfig whose identity is service account `namespace/name`, by a
    /// token from the TokenRequest API (as a kubelet gets one for a pod;
    /// bound to `pod` when given, so it dies with that pod).
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        pod: Option<&str>,
    ) -> PathBuf {
        let mut args = vec!["create", "token", name, "-n", namespace, "--duration=1h"];
        let bound;
        if let Some(p) = pod {
            bound = format!("--bound-object-name={p}");
            args.extend(["--bound-object-kind=Pod", &bound]);
        }
        let token = self.kubectl_ok(&args);
        let path = self.path(&format!(
            "sa-{namespace}-{name}-{}.kubeconfig",
            pod.unwrap_or("unbound")
        ));
        fs::write(
            &path,
            kubeconfig(
                &self.server,
                &self.ca,
                &format!("    token: {}\n", token.trim()),
            ),
        )
        .unwrap();
        path
    }

    /// A node kwok keeps Ready, with `labels`, `NoSchedule` taints
    /// (`key=value`) and what it can hold (`("cpu", "4")`, `("memory",
    /// "8Gi")`, `("nvidia.com/gpu", "1")`; pods and scratch space are ample).
    pub fn add_node(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        taints: &[&str],
        resources: &[(&str, &str)],
    ) {
        let mut metadata_labels = serde_json::json!({
            "type": "kwok",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        });
        for (k, v) in labels {
            metadata_labels[*k] = Value::from(*v);
        }
        let mut holds = serde_json::json!({ "pods": "110", "ephemeral-storage": "500Gi" });
        for (k, v) in resources {
            holds[*k] = Value::from(*v);
        }
        let taints: Vec<Value> = taints
            .iter()
            .map(|t| {
                let (k, v) = t.split_once('=').unwrap_or((t, ""));
                serde_json::json!({ "key": k, "value": v, "effect": "NoSchedule" })
            })
            .collect();
        let node = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": { "kwok.x-k8s.io/node": "fake" },
                "labels": metadata_labels,
            },
            "spec": { "taints": taints },
            "status": { "allocatable": holds, "capacity": holds },
        });
        let o = self.kubectl_with(&self.admin, &["create", "-f", "-"], Some(&node.to_string()));
        assert!(
            o.status.success(),
            "node {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let n = name.to_string();
        self.wait_for(&format!("node {name} Ready (kwok)"), move |cp| {
            let node = cp.get("node", None, &n)?;
            node["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        });
    }

    /// A PersistentVolume of `size` in StorageClass `class` ("" for none),
    /// standing in for a disk the cluster's provisioner would make.
    pub fn add_volume(&self, name: &str, class: &str, size: &str) {
        let yaml = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {name}\nspec:\n  \
             capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  \
             persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"{class}\"\n  \
             hostPath: {{path: /nonexistent/nuketown-test/{name}}}\n"
        );
        self.apply(&yaml);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The dependants first, etcd last.
        for p in self.procs.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let until = Instant::now() + Duration::from_secs(10);
        for p in self.procs.iter_mut().rev() {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > until => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        if std::thread::panicking() || std::env::var_os("NUKETOWN_K8S_KEEP_LOGS").is_some() {
            for p in &self.procs {
                eprintln!(
                    "--- {} (last lines of {}):\n{}",
                    p.name,
                    p.log.display(),
                    self.log_tail(p.name)
                );
            }
        }
    }
}

/// Whether every field `want` sets is in `got` with the same value (the
/// server may add defaults, never change what was declared). The first
/// difference, as a path, when not.
pub fn declared_in(want: &Value, got: &Value, path: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                if v.is_null() {
                    continue;
                }
                let at = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => declared_in(v, gv, &at)?,
                    None => return Err(format!("{at}: declared {v}, missing on the server")),
                }
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                return Err(format!(
                    "{path}: {} items declared, {} on the server",
                    w.len(),
                    g.len()
                ));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                declared_in(wv, gv, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (w, g) if w == g => Ok(()),
        (w, g) => Err(format!("{path}: declared {w}, the server has {g}")),
    }
}

/// `nuketown cloud render TOWN | kubectl apply --server-side -f -`, literally
/// (bash, `pipefail`), as the administrator.
pub fn render_and_apply(cp: &ControlPlane, nuketown: &Path, town: &Path) -> Output {
    Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg("\"$1\" cloud render \"$2\" | \"$3\" --kubeconfig \"$4\" apply --server-side -f -")
        .arg("render-and-apply")
        .arg(nuketown)
        .arg(town)
        .arg(cp.kubectl_bin())
        .arg(&cp.admin)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `<kind>[.<group>]/<name>`, as kubectl names an object in its output.
pub fn kubectl_ref(m: &Value) -> String {
    let kind = m["kind"].as_str().unwrap().to_lowercase();
    let group = m["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .map(|(g, _)| format!(".{g}"))
        .unwrap_or_default();
    format!("{kind}{group}/{}", m["metadata"]["name"].as_str().unwrap())
}

/// The object `m` names, as the server has it now; panics when it is not there.
pub fn live(cp: &ControlPlane, m: &Value) -> Value {
    let r = kubectl_ref(m);
    let (what, name) = r.split_once('/').unwrap();
    cp.get(what, m["metadata"]["namespace"].as_str(), name)
        .unwrap_or_else(|| panic!("{r} is not on the server"))
}

/// Multi-document YAML as JSON objects, as kubectl itself reads it.
pub fn documents(cp: &ControlPlane, yaml: &str) -> Vec<Value> {
    let o = cp.kubectl_with(
        &cp.admin,
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(yaml),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // One JSON object per document, one after the other (a List for one `List`).
    serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .flat_map(|v| match v["kind"].as_str() {
            Some("List") => v["items"].as_array().unwrap().clone(),
            _ => vec![v],
        })
        .collect()
}

impl ControlPlane {
    /// The audit log's events so far (with [`Parts::audit`]).
    pub fn audit_events(&self) -> Vec<Value> {
        fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
