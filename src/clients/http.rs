//! The HTTP(S) client of the commands that talk to a running service (`produce --to http…`,
//! `subscribe` with built-in subscriptions): hyper over rustls, kept-alive connections; and the
//! percent-encoding of text in URLs (and in the alert checkpoint's text).

use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A kept-alive HTTP(S) client.
pub type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client for `http://` and `https://` endpoints. Servers are verified against the system's
/// certificate store; `SSL_CERT_FILE` (or `SSL_CERT_DIR`) names another, for a service with a
/// certificate of its own.
pub fn client(connections: usize) -> Result<HttpClient, String> {
    let tls = super::tls::client_config()?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector))
}

/// Appends `s` with every byte outside `[A-Za-z0-9._-]` as `%XX`, so that names keep clear of
/// the separators of checkpoint text.
pub fn percent_encode(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The inverse of [`percent_encode`]; `None` for anything it does not write.
/// # Errors
/// `None` for anything [`percent_encode`] does not write.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
