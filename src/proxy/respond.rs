//! Every response the proxy makes up itself, in one place: error pages, the "starting"
//! page, 413, redirects. Browsers (`Accept: text/html`) get HTML; everything else gets
//! JSON in Open WebUI's own error shape (`{"detail": ...}`), because its frontend and
//! API clients parse error bodies as JSON.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::route::Hold;

const ERROR_PAGE: &str = include_str!("../../assets/error.html");
const STARTING_PAGE: &str = include_str!("../../assets/starting.html");
/// Seconds a browser waits before reloading the starting page, and the Retry-After
/// given to API clients.
const RETRY_SECS: u64 = 5;

/// Why the proxy could not forward a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The upstream refused the connection or could not be reached.
    UpstreamUnreachable,
    /// Connecting to the upstream took longer than the connect timeout.
    UpstreamTimeout,
    /// The upstream answered with something that is not HTTP, or broke off.
    UpstreamBroken,
    /// The request body is larger than `--max-body`.
    BodyTooLarge,
    /// The request is malformed (e.g. no Host).
    BadRequest,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnreachable | ProxyError::UpstreamBroken => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    fn code(self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamBroken => "upstream_error",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::BadRequest => "bad_request",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => {
                "Open WebUI is not answering. It may be restarting; try again in a moment."
            }
            ProxyError::UpstreamTimeout => {
                "Open WebUI did not accept the connection in time; try again in a moment."
            }
            ProxyError::UpstreamBroken => "Open WebUI sent a broken response.",
            ProxyError::BodyTooLarge => "The upload is larger than this server accepts.",
            ProxyError::BadRequest => "The request is malformed.",
        }
    }
}

/// True when the client is a browser asking for a page.
pub fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn build(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The response for a request the proxy could not forward.
pub fn error(err: ProxyError, html: bool) -> Response<Body> {
    let status = err.status();
    if html {
        let page = ERROR_PAGE
            .replace("{{STATUS}}", status.as_str())
            .replace("{{TITLE}}", status.canonical_reason().unwrap_or(""))
            .replace("{{MESSAGE}}", &escape(err.message()));
        build(status, "text/html; charset=utf-8", page)
    } else {
        let body = serde_json::json!({ "detail": err.message(), "error": err.code() });
        build(status, "application/json", body.to_string())
    }
}

/// The 503 shown while there is no upstream: auto-refreshing HTML for browsers, JSON
/// with Retry-After for API clients.
pub fn hold(hold: &Hold, html: bool) -> Response<Body> {
    let mut res = if html {
        let page = STARTING_PAGE
            .replace("{{REFRESH}}", &RETRY_SECS.to_string())
            .replace("{{HEADLINE}}", hold.phase.headline())
            .replace("{{DETAIL}}", &escape(&hold.detail));
        build(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            page,
        )
    } else {
        let body = serde_json::json!({
            "detail": format!("{}. {}", hold.phase.headline(), hold.detail).trim_end_matches([' ', '.']).to_string() + ".",
            "error": "upstream_".to_string() + hold.phase.as_str(),
        });
        build(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            body.to_string(),
        )
    };
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_SECS));
    res
}

/// A permanent redirect (plain HTTP -> HTTPS).
pub fn redirect(location: &str) -> Response<Body> {
    let mut res = build(
        StatusCode::MOVED_PERMANENTLY,
        "text/plain; charset=utf-8",
        "",
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// 401 for the served Ollama API (no token or a wrong one): `{"error": ...}` like
/// Ollama's own errors, and `WWW-Authenticate: Bearer`.
pub fn unauthorized(message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message });
    let mut res = build(
        StatusCode::UNAUTHORIZED,
        "application/json",
        body.to_string(),
    );
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ollama\""),
    );
    res
}

/// 204 answering a CORS preflight for an allowed origin of the served Ollama API.
pub fn preflight(origin: HeaderValue, request_headers: Option<HeaderValue>) -> Response<Body> {
    let mut res = build(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "");
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        request_headers.unwrap_or(HeaderValue::from_static("authorization, content-type")),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(600));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    res
}

/// A small plain-text response (ACME challenge answers, 404s on the HTTP listener).
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    build(status, "text/plain; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Phase;

    async fn body_text(res: Response<Body>) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn errors_are_json_for_api_clients_and_html_for_browsers() {
        let res = error(ProxyError::UpstreamUnreachable, false);
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let v: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
        assert_eq!(v["error"], "upstream_unreachable");
        let res = error(ProxyError::UpstreamTimeout, true);
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(
            body_text(res)
                .await
                .contains("<h1>504 Gateway Timeout</h1>")
        );
        assert_eq!(error(ProxyError::BodyTooLarge, false).status(), 413);
    }

    #[tokio::test]
    async fn hold_page_escapes_detail_and_sets_retry_after() {
        let h = Hold {
            phase: Phase::Pulling,
            detail: "pulling <42%>".into(),
        };
        let res = hold(&h, true);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "5");
        let page = body_text(res).await;
        assert!(page.contains("pulling &lt;42%&gt;"));
        assert!(page.contains("http-equiv=\"refresh\""));
        let v: serde_json::Value = serde_json::from_str(&body_text(hold(&h, false)).await).unwrap();
        assert_eq!(v["error"], "upstream_pulling");
    }
}
