//! The served Ollama API's gate: which requests are for it (by host name), CORS for
//! the allowed origins, and the bearer token.
//!
//! A request is for the gate when its host (SNI and `Host`/`:authority` carry the same
//! name; the `Host` header decides) is one of the gate's names, or always when the gate
//! has no names (`up --ollama-only`: the whole site is the API). Then:
//! - a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   from an allowed origin is answered here, without the token (browsers never send
//!   credentials on a preflight);
//! - anything else needs `Authorization: Bearer <token>`, else 401 JSON with
//!   `WWW-Authenticate: Bearer`;
//! - the `Authorization` header is removed before forwarding: Ollama never sees it;
//! - responses to an allowed origin carry `Access-Control-Allow-Origin` (set, not
//!   added, so Ollama's own CORS answer is not duplicated).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, header};

use super::Body;
use super::respond;
use crate::ollama::token::TokenCheck;
use crate::route::RouteRx;

/// The served Ollama API, as the proxy sees it.
pub struct OllamaGate {
    /// Host names served by the gate; empty: every request.
    pub hosts: Vec<String>,
    /// Where the API's requests go; `None`: the site's own route table.
    pub routes: Option<RouteRx>,
    pub token: Arc<TokenCheck>,
    /// Allowed browser origins (`--allow-origin`), e.g. `https://chat.example.com`.
    pub origins: Vec<String>,
}

/// What the gate decided for one request.
pub enum Decision {
    /// Not for the gate: the site's normal forwarding.
    Site,
    /// Answered by the gate itself (401, preflight).
    Answer(http::Response<Body>),
    /// Authorised: forward to the gate's upstream; set this CORS origin on the answer.
    Forward { cors: Option<HeaderValue> },
}

/// The request's host name without port, lower-case.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))?;
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
        None => raw.split(':').next().unwrap_or_default().to_string(),
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// The token after `Bearer ` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl OllamaGate {
    /// Whether `req` is for the gate.
    pub fn covers<B>(&self, req: &Request<B>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        host_of(req).is_some_and(|h| self.hosts.iter().any(|n| n.eq_ignore_ascii_case(&h)))
    }

    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?.trim_end_matches('/');
        self.origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }

    /// Decides for one request; on `Forward` the `Authorization` header is gone.
    pub fn decide<B>(&self, req: &mut Request<B>) -> Decision {
        if !self.covers(req) {
            return Decision::Site;
        }
        let cors = self.allowed_origin(req.headers());
        if req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            && let Some(origin) = &cors
        {
            let asked = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned();
            return Decision::Answer(respond::preflight(origin.clone(), asked));
        }
        let ok = match bearer(req.headers()) {
            None => Err(
                "this Ollama API needs a token: send `Authorization: Bearer TOKEN` (`webui token show` on the server prints it)",
            ),
            Some(t) if self.token.accepts(t) => Ok(()),
            Some(_) => Err(
                "the token is wrong or was rotated: get the current one with `webui token show` on the server",
            ),
        };
        if let Err(msg) = ok {
            let mut res = respond::unauthorized(msg);
            if let Some(o) = cors {
                res.headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            }
            return Decision::Answer(res);
        }
        req.headers_mut().remove(header::AUTHORIZATION);
        Decision::Forward { cors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(hosts: &[&str]) -> (OllamaGate, tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let (tok, _) = crate::ollama::token::load_or_create(&p).unwrap();
        let g = OllamaGate {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            routes: None,
            token: Arc::new(TokenCheck::new(p)),
            origins: vec!["https://chat.example.com".into()],
        };
        (g, dir, tok)
    }

    fn req(host: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::get("/api/tags").header(header::HOST, host);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_routing_token_and_header_removal() {
        let (g, _d, tok) = gate(&["models.example.com"]);
        assert!(matches!(
            g.decide(&mut req("chat.example.com", None)),
            Decision::Site
        ));
        let Decision::Answer(res) = g.decide(&mut req("Models.Example.com:8443", None)) else {
            panic!("no token must be answered");
        };
        assert_eq!(res.status(), 401);
        assert!(
            res.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(matches!(
            g.decide(&mut req("models.example.com", Some("Bearer nope"))),
            Decision::Answer(_)
        ));
        let mut ok = req("models.example.com", Some(&format!("bearer {tok}")));
        assert!(matches!(
            g.decide(&mut ok),
            Decision::Forward { cors: None }
        ));
        assert!(!ok.headers().contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn preflight_from_an_allowed_origin_needs_no_token() {
        let (g, _d, _) = gate(&[]);
        let mut pre = Request::options("/api/chat")
            .header(header::HOST, "anything")
            .header(header::ORIGIN, "https://chat.example.com")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(())
            .unwrap();
        let Decision::Answer(res) = g.decide(&mut pre) else {
            panic!("preflight must be answered");
        };
        assert_eq!(res.status(), 204);
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://chat.example.com"
        );
        let mut other = Request::options("/api/chat")
            .header(header::ORIGIN, "https://evil.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(())
            .unwrap();
        let Decision::Answer(res) = g.decide(&mut other) else {
            panic!("a foreign preflight is refused");
        };
        assert_eq!(res.status(), 401);
    }
}
