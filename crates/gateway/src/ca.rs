//! The town CA: made once by the town hall, then used by the gateway to sign
//! a leaf certificate for each intercepted host, so agents that trust the
//! town CA can talk TLS to the gateway in the real host's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use time::{Duration, OffsetDateTime};

use crate::config::TownCa;
use crate::error::GatewayError;

/// Makes a new town CA (CA:true, valid ten years) named `common_name`.
pub fn generate_ca(common_name: &str) -> Result<TownCa, GatewayError> {
    let ca_err = |e: rcgen::Error| GatewayError::Ca(e.to_string());
    let key = KeyPair::generate().map_err(ca_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key).map_err(ca_err)?;
    Ok(TownCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Signs and caches the TLS server configurations for intercepted hosts.
pub(crate) struct LeafMinter {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    cache: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl LeafMinter {
    /// Reads the town CA; fails with a message when its PEM does not parse.
    pub(crate) fn new(ca: &TownCa) -> Result<LeafMinter, GatewayError> {
        let ca_err = |e: rcgen::Error| GatewayError::Ca(e.to_string());
        let key = KeyPair::from_pem(&ca.key_pem).map_err(ca_err)?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(ca_err)?;
        use rustls::pki_types::pem::PemObject;
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
            .map_err(|e| GatewayError::Ca(format!("certificate PEM: {e}")))?;
        Ok(LeafMinter {
            issuer,
            ca_der,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS configuration that presents a certificate for `host`.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        if let Some(config) = self.cache.lock().expect("leaf cache").get(host) {
            return Ok(config.clone());
        }
        let config = Arc::new(self.mint(host)?);
        self.cache
            .lock()
            .expect("leaf cache")
            .insert(host.to_owned(), config.clone());
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, String> {
        let err = |e: rcgen::Error| format!("cannot make a certificate for {host}: {e}");
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(err)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key_der)
                .map_err(|e| format!("cannot use the certificate for {host}: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_leaves_for_names_and_ips() {
        let ca = generate_ca("test town").unwrap();
        assert!(ca.cert_pem.contains("BEGIN CERTIFICATE"));
        let minter = LeafMinter::new(&ca).unwrap();
        let a = minter.server_config("github.com").unwrap();
        let b = minter.server_config("github.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "leaves are cached per host");
        minter.server_config("127.0.0.1").unwrap();
    }
}
