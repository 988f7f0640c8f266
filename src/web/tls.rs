//! HTTPS and WSS on the service's one port, when `web.tls_cert` and `web.tls_key` are set: the
//! server's TLS settings (connections are served by [`super::server`]).
//!
//! rustls with the aws-lc-rs provider (the one the AWS SDK already links). Each accepted
//! connection does its handshake in its own task, so a slow or broken client holds up no one;
//! a failed handshake is logged at debug level (scanners make many) and costs only that
//! connection. Connections are served by hyper's HTTP/1 with upgrades (WebSocket).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::setting::BadSetting;

/// The server's TLS settings from PEM files.
///
/// # Errors
/// A file that cannot be read, holds no certificate or key, or a key that does not match: a
/// config error (exit status 2) naming the key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, BadSetting> {
    let bad = |key: &str, message: String| BadSetting::key(key, message);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| bad("web.tls_cert", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(bad(
            "web.tls_cert",
            format!(
                "{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")",
                cert.display()
            ),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            "web.tls_key",
            format!(
                "{}: cannot read a PEM private key from it: {e}",
                key.display()
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("web.tls_cert", format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            bad(
                "web.tls_key",
                format!("does not make a usable pair with web.tls_cert: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
