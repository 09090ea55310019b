//! `nuketown ask`: an agent asks a human for more than it was declared,
//! the way it would ask a colleague; the town hall brokers it like a sudo
//! request (every approver channel, default deny, the audit log).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use nuketown_hall::protocol::{self, FromAsker, ToRequester, VERSION};
use nuketown_town::network;

/// Ask the humans for more than this agent was declared.
///
/// Run as the agent. The request waits for a human on any approver channel
/// (terminal, desktop, Matrix) and ends with their decision: exit 0 when
/// approved, 1 when denied, timed out or the hall is not there.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
    /// The town hall's ask socket.
    #[arg(long, global = true, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
    socket: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Reach HOST[:PORT] (a host name, an address, `[IPv6]:PORT`, or a
    /// network like 10.0.0.0/8) for a while, over TCP and UDP. DNS and
    /// loopback are always reachable; `agents.<name>.network.egress` says
    /// what else is without asking.
    ///
    /// Example: nuketown ask network pypi.org:443 --for 1h --reason "install the test deps"
    Network {
        /// HOST, HOST:PORT, ADDRESS, [IPv6]:PORT or NETWORK[:PORT]; no port means every port.
        target: String,
        /// For how long: 90s, 30m, 1h, 1h30m (at most a day).
        #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
        duration: String,
        /// Why, in a sentence, for the human who decides.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Move this agent's workload in the cluster to a bigger tier (small <
    /// standard < large < gpu), up to `cloud.scaling.maxResources`. Run in
    /// the agent's pod: the request goes into its request object, the town
    /// hall's relay brings it to a human (or `scaling.autoApprove` grants
    /// it), and the operator moves the pod. It comes back down by itself
    /// after `scaling.idleTimeout` without activity.
    ///
    /// Example: nuketown ask resources large --reason "the test suite needs 8 GiB"
    Resources {
        /// The tier: small, standard, large or gpu.
        tier: String,
        /// Why, in a sentence, for the human who decides.
        #[arg(long, default_value = "")]
        reason: String,
        /// How long to wait for the decision (the request stays asked after).
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        wait: String,
    },
    /// More of one of this agent's credentials past its limit (a credential
    /// declared with `onLimit = "ask"`): one more window's worth of its
    /// limits, if a human approves. The gateway's error at the limit names
    /// the credential.
    ///
    /// Example: nuketown ask credential anthropic --reason "the refactor needs a few more turns"
    Credential {
        /// The credential's name (agents.<name>.credentials.<credential>).
        credential: String,
        /// Why, in a sentence, for the human who decides.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Tell the scaling operator that this agent is working now, so that it
    /// stays at the tier it was moved to until `scaling.idleTimeout` after
    /// this. Run in the agent's pod; the chat bridge there runs it when a
    /// message starts a turn. It can keep an approved tier, never get a
    /// bigger one.
    Active,
    /// Follow this agent's requests for a bigger tier in its pod: one JSON
    /// line per request asked and per decision (the town hall's follow
    /// events), until stopped. The chat bridge in the pod runs it to show
    /// them in the room; a decision counts only if the hall's relay wrote it.
    Follow,
}

/// Send the request and wait for the decision.
pub fn run(args: Args) -> Result<ExitCode> {
    let msg = match args.what {
        What::Active => return active(),
        What::Follow => return follow(),
        What::Resources { tier, reason, wait } => {
            if nuketown_town::tiers::rank(&tier).is_none() {
                bail!(
                    "{tier:?} is not a tier; ask for one of {}",
                    nuketown_town::tiers::ORDER.join(", ")
                );
            }
            if reason.len() > protocol::MAX_REASON {
                bail!("--reason: at most {} bytes", protocol::MAX_REASON);
            }
            let wait =
                network::parse_duration(&wait).map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
            return resources(&tier, &reason, std::time::Duration::from_secs(wait));
        }
        What::Credential { credential, reason } => {
            if !nuketown_town::credentials::valid_name(&credential) {
                bail!(
                    "{credential:?} is not a credential's name (lowercase letters, digits and '-')"
                );
            }
            if reason.len() > protocol::MAX_REASON {
                bail!("--reason: at most {} bytes", protocol::MAX_REASON);
            }
            FromAsker::Credential {
                v: VERSION,
                credential,
                reason,
            }
        }
        What::Network {
            target,
            duration,
            reason,
        } => {
            // Refused here before the hall is bothered; the hall checks again.
            let t = network::parse_target(&target).map_err(|e| anyhow::anyhow!("{e}"))?;
            let secs =
                network::parse_duration(&duration).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            if secs > 86_400 {
                bail!("--for: {duration:?} is longer than a day; ask for at most \"24h\" (and again later)");
            }
            if reason.len() > protocol::MAX_REASON {
                bail!("--reason: at most {} bytes", protocol::MAX_REASON);
            }
            FromAsker::Network {
                v: VERSION,
                target: t.to_string(),
                secs,
                reason,
            }
        }
    };
    let mut s = UnixStream::connect(&args.socket).with_context(|| {
        format!(
            "the town hall is not answering at {} (denied: nothing was changed)",
            args.socket.display()
        )
    })?;
    // The hall closes a connection it does not serve (not an agent of the
    // town) without a byte: that is a denial, whatever the socket says.
    let sent = s.write_all(&protocol::encode(&msg));
    let mut rd = BufReader::new(s.try_clone()?);
    loop {
        let mut line = Vec::new();
        let n = match (&sent, rd.read_until(b'\n', &mut line)) {
            (Ok(()), Ok(n)) => n,
            _ => 0,
        };
        if n == 0 {
            eprintln!("nuketown: the town hall closed the connection without a decision: denied");
            return Ok(ExitCode::FAILURE);
        }
        match protocol::parse_to_requester(&line) {
            Ok(ToRequester::Pending { id, timeout_secs }) => {
                eprintln!(
                    "nuketown: request {} is waiting for a human (up to {timeout_secs} s)…",
                    &id[..8]
                );
            }
            Ok(ToRequester::Decision {
                approved, reason, ..
            }) => {
                let reason = protocol::show_str(&reason);
                if approved {
                    println!("approved: {}", reason.trim_matches('"'));
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!("denied: {}", reason.trim_matches('"'));
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => bail!("the town hall answered something else: {e}"),
        }
    }
}

/// Where the service account's namespace is, in a pod.
#[cfg(feature = "cloud")]
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The agent and namespace of the pod this runs in.
#[cfg(feature = "cloud")]
fn pod(what: &str) -> Result<(String, String)> {
    let agent = std::env::var("NUKETOWN_AGENT").with_context(|| {
        format!("NUKETOWN_AGENT is not set: run `nuketown ask {what}` in the agent's pod (the render sets it)")
    })?;
    let namespace = match std::env::var("NUKETOWN_NAMESPACE") {
        Ok(n) => n,
        Err(_) => std::fs::read_to_string(NAMESPACE_FILE)
            .map(|s| s.trim().to_string())
            .with_context(|| {
                format!("{NAMESPACE_FILE}: not in a pod with a service account token (agents.{agent}.cloud.scaling.maxResources gives it one)")
            })?,
    };
    Ok((agent, namespace))
}

/// Run `f` with a client of the cluster this pod is in, on one thread.
#[cfg(feature = "cloud")]
fn in_cluster<T, F>(f: impl FnOnce(kube::Client) -> F) -> Result<T>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach the cluster's API server from here")?;
        f(client).await.map_err(|e| anyhow::anyhow!("{e}"))
    })
}

#[cfg(feature = "cloud")]
fn active() -> Result<ExitCode> {
    let (agent, namespace) = pod("active")?;
    in_cluster(|client| async move {
        nuketown_operator::requests::active(&client, &namespace, &agent).await
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "cloud")]
fn follow() -> Result<ExitCode> {
    let (agent, namespace) = pod("follow")?;
    in_cluster(|client| async move {
        nuketown_operator::requests::follow(&client, &namespace, &agent, |ev| {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, &ev);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        })
        .await;
        Err("the watch of the request object ended".to_string())
    })
}

#[cfg(not(feature = "cloud"))]
fn follow() -> Result<ExitCode> {
    bail!("this nuketown was built without the cloud feature; `nuketown ask follow` runs in the agent's pod")
}

#[cfg(not(feature = "cloud"))]
fn active() -> Result<ExitCode> {
    bail!("this nuketown was built without the cloud feature; `nuketown ask active` runs in the agent's pod")
}

#[cfg(feature = "cloud")]
fn resources(tier: &str, reason: &str, wait: std::time::Duration) -> Result<ExitCode> {
    let (agent, namespace) = pod("resources")?;
    let answer = in_cluster(|client| async move {
        eprintln!(
            "nuketown: asking for {tier}; waiting for a human (up to {} s)…",
            wait.as_secs()
        );
        nuketown_operator::requests::ask(&client, &namespace, &agent, tier, reason, wait).await
    })?;
    let reason = protocol::show_str(&answer.reason);
    if answer.approved {
        println!(
            "approved by {} via {}: {}; the pod moves to {tier} (it restarts there)",
            answer.by,
            answer.via,
            reason.trim_matches('"')
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("denied: {}", reason.trim_matches('"'));
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(not(feature = "cloud"))]
fn resources(_tier: &str, _reason: &str, _wait: std::time::Duration) -> Result<ExitCode> {
    bail!("this nuketown was built without the cloud feature; `nuketown ask resources` runs in the agent's pod")
}
