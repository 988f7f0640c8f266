//! The HTTP(S) client of the commands that talk to a running service (`produce --to http…`,
//! `subscribe` with built-in subscriptions): hyper over rustls, kept-alive connections.

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
