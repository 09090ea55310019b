//! Scaling as a conversation, in the cluster: an agent asks for a bigger
//! tier, a human (or an auto-approve rule) says yes, and this operator moves
//! its workload there — resources and node pool — and back to its declared
//! tier after `scaling.idleTimeout` without activity (de-escalation needs
//! no approval). Git stays the source of truth for everything declared; the
//! tier an agent is at now is the operator's, and the generated Argo CD
//! Application leaves it alone.
//!
//! [`scaling`] decides (pure); [`controller`] is the kube-rs `Controller`
//! that reads the Deployments' annotations and patches them.

pub mod controller;
pub mod requests;
pub mod scaling;

/// Make ring the process's TLS provider before any kube client is built.
/// kube's rustls picks the process default, and a binary that also links
/// another provider (the workspace's Matrix client brings aws-lc-rs) has
/// none by itself: every client would panic. Idempotent.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
