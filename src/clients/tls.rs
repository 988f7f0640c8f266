//! TLS for the service's own connections out (`produce --to https://…`, an SMTP server over
//! TLS): rustls with the aws-lc-rs provider the AWS SDK already builds, and the system's trusted
//! certificates.

use std::sync::Arc;

/// The client side, for the service's own connections out (`produce --to https://…`, an SMTP
/// server over TLS): servers verified against the system's certificate store; `SSL_CERT_FILE`
/// (or `SSL_CERT_DIR`) names another, for a server with a certificate of its own.
///
/// # Errors
/// The TLS library refused the settings (in words).
pub fn client_config() -> Result<rustls::ClientConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(errors = ?found.errors, "no trusted certificates found: TLS servers will be refused (set SSL_CERT_FILE)");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
