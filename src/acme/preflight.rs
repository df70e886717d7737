//! Checks before spending the CA's rate limits (Let's Encrypt allows 5 failed
//! validations per host per hour): the name resolves, and a token served under
//! `/.well-known/acme-challenge/` comes back when fetched through `http://<name>/`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::challenge::Challenges;
use crate::error::UserError;

/// Runs the checks for every domain; `http_port` is the plain-HTTP listener's port
/// (80 in production). The error says which step failed and what to do.
pub async fn check(
    domains: &[String],
    http_port: u16,
    challenges: &Challenges,
) -> anyhow::Result<()> {
    let local: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    for domain in domains {
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::lookup_host((domain.as_str(), http_port)),
        )
        .await
        {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Err(UserError::new(format!("DNS: {domain} does not resolve ({e})"))
                    .hint(format!(
                        "create an A (and AAAA) record for {domain} pointing to this server's public address, wait for it to propagate, then retry; --skip-preflight to order anyway"
                    ))
                    .into());
            }
            Err(_) => {
                return Err(UserError::new(format!("DNS: looking up {domain} timed out")).into());
            }
        };
        let elsewhere: Vec<String> = addrs
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !local.contains(ip))
            .map(|ip| ip.to_string())
            .collect();
        let token = hex::encode(rand_bytes());
        challenges.insert(token.clone(), token.clone());
        let probe = fetch(domain, http_port, &token).await;
        challenges.remove(&token);
        match probe {
            Ok(body) if body.trim() == token => {}
            Ok(_) => {
                return Err(UserError::new(format!(
                    "http://{domain}/.well-known/acme-challenge/ is answered by something else, not by webui{}",
                    describe(&elsewhere)
                ))
                .hint("point the name at this server, and make sure nothing in front of it (another proxy, a CDN) intercepts port 80; --skip-preflight to order anyway")
                .into());
            }
            Err(e) => {
                return Err(UserError::new(format!(
                    "cannot reach http://{domain}:{http_port}/ from here: {e}{}",
                    describe(&elsewhere)
                ))
                .hint("open port 80 in the firewall (the CA connects to it for http-01; use --challenge tls-alpn-01 if only 443 is open) and check the DNS record; --skip-preflight to order anyway")
                .into());
            }
        }
    }
    Ok(())
}

fn describe(elsewhere: &[String]) -> String {
    if elsewhere.is_empty() {
        String::new()
    } else {
        format!(
            " (the name points to {}, which is not an address of this host; fine behind NAT, wrong otherwise)",
            elsewhere.join(", ")
        )
    }
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b
}

async fn fetch(domain: &str, port: u16, token: &str) -> anyhow::Result<String> {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri =
        format!("http://{domain}:{port}/.well-known/acme-challenge/{token}").parse()?;
    let res = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))??;
    let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))??
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
