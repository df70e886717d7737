//! Requests of webui's own to URLs an operator gives (the release document of `webui
//! version --check`, the webhook of `--notify-url-file`): HTTP/1.1 over http or https,
//! trusting the system's roots.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// A client for bodies of type `B`.
pub fn client<B>() -> anyhow::Result<Client<HttpsConnector<HttpConnector>, B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(crate::tls::provider())?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// The `User-Agent` of those requests.
pub const USER_AGENT: &str = concat!("webui/", env!("CARGO_PKG_VERSION"));
