//! Forwarding one request to the upstream and its response back, streaming both ways.
//!
//! Architecture Invariant: no body is ever buffered. Request bodies go to the upstream
//! frame by frame; each response frame is handed to hyper as soon as it arrives, so
//! SSE and NDJSON streams reach the client as they are produced. There is no read
//! timeout on upstream bodies (generations run for minutes), only a connect timeout
//! and a response timeout (`--response-timeout`, from the request sent in full to
//! the response head: an upstream that accepts and never answers gets a 504).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::auth::Decision;
use super::empty_body;
use super::headers::{self, Peer};
use super::respond::{self, ProxyError};
use super::{Body, BoxError, Shared, balance, tunnel};
use crate::route::Route;

static HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

/// Handles one client request on the HTTPS listener.
pub async fn handle(shared: Arc<Shared>, mut req: Request<Incoming>, peer: Peer) -> Response<Body> {
    let start = Instant::now();
    let method = req.method().clone();
    // A handle on the request's URI, not a copy of its text.
    let uri = req.uri().clone();
    let path = uri.path();
    let html = respond::wants_html(req.headers());

    // The served Ollama API (token, CORS) or the site itself.
    let mut cors = None;
    let mut routes = &shared.routes;
    if let Some(gate) = &shared.ollama {
        match gate.decide(&mut req) {
            Decision::Site => {}
            Decision::Answer(res) => return finish(&shared, res, &method, path, start, None),
            Decision::Forward { cors: c } => {
                cors = c;
                routes = gate.routes.as_ref().unwrap_or(&shared.routes);
            }
        }
    }
    let ups = match settled(routes).await {
        Route::Forward(ups) => ups,
        Route::Hold(hold) => {
            let res = respond::hold(&hold, html);
            return finish(&shared, res, &method, path, start, None);
        }
    };
    if let (Some(max), Some(len)) = (shared.max_body, content_length(&req))
        && len > max
    {
        return finish(
            &shared,
            respond::error(ProxyError::BodyTooLarge, html),
            &method,
            path,
            start,
            None,
        );
    }

    let upgrade = req.version() <= http::Version::HTTP_11 && headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();

    // Host: an HTTP/1.1 client sends it; an HTTP/2 client sends :authority instead,
    // which becomes Host on the HTTP/1.1 hop to the upstream.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let Some(host) = host else {
        return finish(
            &shared,
            respond::error(ProxyError::BadRequest, html),
            &method,
            path,
            start,
            None,
        );
    };

    let snap = shared.balancer.snapshot(&ups);
    let several = snap.slots.len() > 1;
    // socket.io's session lives in one replica: `/ws/` goes back to the one named by
    // the cookie (see `balance`).
    let sticky = several && path.starts_with(balance::STICKY_PREFIX);
    let cookie = sticky
        .then(|| balance::sticky_cookie(&parts.headers).map(str::to_owned))
        .flatten();

    let mut headers = parts.headers;
    headers::strip_hop_by_hop(&mut headers, upgrade);
    headers::set_forwarded(&mut headers, &peer, Some(&host), &shared.trusted_proxies);
    headers.insert(header::HOST, host);

    // Architecture Invariant: a request is retried on another upstream only when no
    // upstream can have acted on it: its connection failed before anything was sent,
    // or it is a bodiless GET/HEAD/OPTIONS that failed before the response head. A
    // request whose body was (even partly) sent is never sent twice. The pool applies
    // the same rule on one upstream (`upstream::Pool::request`).
    let bodiless = upgrade || body.is_end_stream();
    let idempotent = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    // Set when the body outgrows --max-body on its way (only a limited body has one).
    let mut too_large = None;
    let body: Body = match shared.max_body {
        // Nothing to limit or pass on; an empty body is not even allocated.
        _ if upgrade || body.is_end_stream() => empty_body(),
        Some(max) => {
            let tripped = Arc::new(AtomicBool::new(false));
            too_large = Some(tripped.clone());
            Limited {
                inner: body,
                left: max,
                tripped,
            }
            .boxed()
        }
        None => body.map_err(BoxError::from).boxed(),
    };
    let mut body = Some(body);
    let mut headers = Some(headers);
    // Origin-form: the upstream connection is chosen by the upstream's authority.
    let target = Uri::from(headers::origin_form(&parts.uri));
    let mut tried = 0u64;
    let mut attempts = 0;
    let mut failed = ProxyError::UpstreamUnreachable;
    let answered = loop {
        let next = (attempts < MAX_ATTEMPTS)
            .then(|| shared.balancer.pick(&snap, tried, cookie.as_deref()))
            .flatten();
        let Some(i) = next else { break None };
        attempts += 1;
        tried |= 1u64.checked_shl(i as u32).unwrap_or(0);
        let slot = &snap.slots[i];
        let Some(to) = slot.uri.authority() else {
            return finish(
                &shared,
                respond::error(ProxyError::BadRequest, html),
                &method,
                path,
                start,
                None,
            );
        };
        // With other upstreams to retry on, the body is lent so that it can be taken
        // back when the connection fails before its first frame was asked for.
        let (attempt_body, lent) = match body.take() {
            Some(b) if several && !bodiless => {
                let lent = Arc::new(std::sync::Mutex::new(Some(b)));
                (Lent::new(lent.clone()).boxed(), Some(lent))
            }
            Some(b) => (b, None),
            None => (empty_body(), None),
        };
        // A body still to come is watched, so that the response timeout starts once it
        // has been sent; a bodiless request (most of them) starts it at once.
        let (attempt_body, sent_rx) = if attempt_body.is_end_stream() {
            (attempt_body, None)
        } else {
            let (sent_tx, sent_rx) = tokio::sync::watch::channel(false);
            let body = Sent {
                inner: attempt_body,
                done: sent_tx,
            };
            body.check_end();
            (body.boxed(), Some(sent_rx))
        };
        let mut out = Request::new(attempt_body);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = target.clone();
        *out.version_mut() = http::Version::HTTP_11;
        *out.headers_mut() = match (several, &mut headers) {
            (true, Some(h)) => h.clone(),
            (_, h) => h.take().unwrap_or_default(),
        };

        let in_flight = crate::route::RequestGuard::new(slot.counts.clone());
        let sent = Instant::now();
        let answer = std::pin::pin!(shared.upstream.request(to, out));
        match within(shared.response_timeout, sent_rx, answer).await {
            Some(Ok(res)) => {
                shared.balancer.answered(slot);
                break Some((slot, res, in_flight, sent));
            }
            None => {
                tracing::warn!(target: "webui::proxy", %path, upstream = %slot.uri, "upstream did not answer within --response-timeout");
                return finish(
                    &shared,
                    respond::error(ProxyError::UpstreamTimeout, html),
                    &method,
                    path,
                    start,
                    None,
                );
            }
            Some(Err(e)) => {
                failed = if too_large
                    .as_ref()
                    .is_some_and(|t| t.load(Ordering::Relaxed))
                {
                    ProxyError::BodyTooLarge
                } else {
                    classify(&e)
                };
                if e.is_connect() {
                    shared.balancer.connect_failed(slot);
                }
                let unsent = lent.and_then(|l| l.lock().unwrap_or_else(|p| p.into_inner()).take());
                let retry = failed != ProxyError::BodyTooLarge
                    && ((e.is_connect() && (bodiless || unsent.is_some()))
                        || (bodiless && idempotent));
                let retry = retry && several;
                tracing::warn!(target: "webui::proxy", error = %error_chain(&e), %path, upstream = %slot.uri, retry, "upstream request failed");
                if !retry {
                    break None;
                }
                body = unsent;
            }
        }
    };
    let Some((slot, mut res, in_flight, sent)) = answered else {
        if shared.supervised && failed == ProxyError::UpstreamUnreachable {
            // The container died a moment before its supervisor heard of it.
            let hold = crate::route::Hold {
                phase: crate::route::Phase::Restarting,
                detail: "Open WebUI stopped answering; it is being restarted.".into(),
            };
            return finish(
                &shared,
                respond::hold(&hold, html),
                &method,
                path,
                start,
                None,
            );
        }
        return finish(
            &shared,
            respond::error(failed, html),
            &method,
            path,
            start,
            None,
        );
    };
    let upstream_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let answered_by = Some((upstream_ms, &slot.uri));
    let pin = (sticky && cookie.as_deref() != Some(slot.id.as_str()))
        .then(|| balance::set_cookie(&slot.id))
        .flatten();

    if let Some(client_upgrade) = client_upgrade
        && res.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        let idle = shared.ws_idle_timeout;
        let open = crate::route::TunnelGuard::new(slot.counts.clone());
        drop(in_flight);
        let tunnel_path = path.to_string();
        shared.tracker.spawn(async move {
            tunnel::run(client_upgrade, upstream_upgrade, idle, tunnel_path).await;
            drop(open);
        });
        let (mut parts, _) = res.into_parts();
        if let Some(pin) = pin {
            parts.headers.append(header::SET_COOKIE, pin);
        }
        let res = Response::from_parts(parts, empty_body());
        return finish(&shared, res, &method, path, start, answered_by);
    }

    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if let Some(origin) = cors {
        parts
            .headers
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    if let Some(pin) = pin {
        parts.headers.append(header::SET_COOKIE, pin);
    }
    // The request counts as in flight until its body has been passed on or dropped.
    let body = body.map_err(BoxError::from).map_frame(move |frame| {
        let _ = &in_flight;
        frame
    });
    let res = Response::from_parts(parts, body.boxed());
    finish(&shared, res, &method, path, start, answered_by)
}

/// At most this many upstreams are tried for one request (each at most once).
const MAX_ATTEMPTS: usize = 5;

pin_project_lite::pin_project! {
    /// A request body left in a shared slot until the upstream connection asks for its
    /// first frame: when the connection fails before that, the caller takes it back
    /// whole and can send it elsewhere.
    struct Lent {
        slot: Arc<std::sync::Mutex<Option<Body>>>,
        taken: Option<Body>,
        end: bool,
        hint: SizeHint,
    }
}

impl Lent {
    fn new(slot: Arc<std::sync::Mutex<Option<Body>>>) -> Lent {
        let (end, hint) = slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or((true, SizeHint::with_exact(0)), |b| {
                (b.is_end_stream(), b.size_hint())
            });
        Lent {
            slot,
            taken: None,
            end,
            hint,
        }
    }
}

impl HttpBody for Lent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.taken.is_none() {
            *this.taken = this.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        match this.taken {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.taken.as_ref().map_or(self.end, |b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.taken.as_ref().map_or(self.hint, |b| b.size_hint())
    }
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Maps an upstream client error to what the client is told.
fn classify(e: &super::upstream::Error) -> ProxyError {
    if e.is_timeout() {
        ProxyError::UpstreamTimeout
    } else if e.is_connect() {
        ProxyError::UpstreamUnreachable
    } else {
        ProxyError::UpstreamBroken
    }
}

/// Wraps the response body so the access log line is written when the body ends,
/// with the bytes actually sent.
fn finish(
    shared: &Shared,
    res: Response<Body>,
    method: &http::Method,
    path: &str,
    start: Instant,
    answered_by: Option<(f64, &Uri)>,
) -> Response<Body> {
    let mut res = res;
    // Every HTTPS response carries HSTS, the proxy's own pages (502, starting) too:
    // a browser's first visit may well land on one of those.
    if shared.hsts
        && !res
            .headers()
            .contains_key(header::STRICT_TRANSPORT_SECURITY)
    {
        res.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
    }
    // MIME sniffing turns an uploaded file into a script; Open WebUI serves correct
    // types, so refusing to sniff costs nothing.
    if !res.headers().contains_key(header::X_CONTENT_TYPE_OPTIONS) {
        res.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if !shared.access_log {
        return res;
    }
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let logged = Logged {
        inner: body,
        bytes: 0,
        line: Some(AccessLine {
            method: method.clone(),
            path: path.to_string(),
            status,
            start,
            upstream_ms: answered_by.map(|(ms, _)| ms),
            upstream: answered_by.map(|(_, u)| u.to_string()),
        }),
    };
    Response::from_parts(parts, logged.boxed())
}

struct AccessLine {
    method: http::Method,
    path: String,
    status: u16,
    start: Instant,
    upstream_ms: Option<f64>,
    /// The upstream that answered (none for the proxy's own answers).
    upstream: Option<String>,
}

pin_project_lite::pin_project! {
    /// A body that counts what it passes on and logs the request when dropped.
    struct Logged {
        #[pin]
        inner: Body,
        bytes: u64,
        line: Option<AccessLine>,
    }

    impl PinnedDrop for Logged {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(l) = this.line.take() {
                tracing::info!(
                    target: "webui::access",
                    method = %l.method,
                    path = %l.path,
                    status = l.status,
                    bytes = *this.bytes,
                    duration_ms = l.start.elapsed().as_secs_f64() * 1000.0,
                    upstream_ms = l.upstream_ms.unwrap_or(0.0),
                    upstream = %l.upstream.as_deref().unwrap_or("-"),
                    "{} {} {}", l.method, l.path, l.status
                );
            }
        }
    }
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            *this.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails once more than `left` bytes have passed, and says so
    /// through `tripped` so the client gets 413 rather than 502.
    struct Limited {
        #[pin]
        inner: Incoming,
        left: u64,
        tripped: Arc<AtomicBool>,
    }
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.left {
                        this.tripped.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("request body exceeds --max-body".into())));
                    }
                    *this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|o| o.map(|r| r.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How long a request waits on a starting site before it gets the starting page. A
/// relaunched `webui up` adopting running containers (after a crash or a restart of
/// the service) forwards within a fraction of a second: a request arriving meanwhile
/// is kept and answered by Open WebUI instead of 503. On a first start (minutes) it
/// only delays the starting page by this much.
const START_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The route to use: the current one, except that a launcher's start-up hold
/// (`Pulling`, which a relaunch passes through while it checks the image, then
/// `Starting`) is waited on for up to [`START_GRACE`] in case it turns into a
/// `Forward`.
async fn settled(routes: &crate::route::RouteRx) -> Route {
    if let Route::Forward(ups) = &*routes.borrow() {
        return Route::Forward(ups.clone());
    }
    let mut rx = routes.clone();
    let deadline = tokio::time::Instant::now() + START_GRACE;
    loop {
        let route = rx.borrow_and_update().clone();
        match &route {
            Route::Hold(h)
                if matches!(
                    h.phase,
                    crate::route::Phase::Pulling | crate::route::Phase::Starting
                ) => {}
            _ => return route,
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return route,
        }
    }
}

/// The upstream's answer, or None when its head did not come within `limit` of the
/// request body having been sent in full (a slow upload is the client's pace, not the
/// upstream's). Bodies after the head have no timeout: generations stream for minutes.
/// `answer` is pinned by the caller: taken by value, it would be held twice in this
/// future (as the argument and in the `select!`), and this is the largest part of
/// every request's state.
async fn within<F: std::future::Future>(
    limit: std::time::Duration,
    sent: Option<tokio::sync::watch::Receiver<bool>>,
    answer: Pin<&mut F>,
) -> Option<F::Output> {
    let timer = async {
        if let Some(mut sent) = sent
            && sent.wait_for(|done| *done).await.is_err()
        {
            // The body was dropped unsent: the request itself fails.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(limit).await;
    };
    tokio::select! {
        answer = answer => Some(answer),
        _ = timer => None,
    }
}

/// A request body that says when it has been sent in full.
struct Sent {
    inner: Body,
    done: tokio::sync::watch::Sender<bool>,
}

impl Sent {
    fn check_end(&self) {
        if self.inner.is_end_stream() {
            self.done.send_replace(true);
        }
    }
}

impl HttpBody for Sent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done.send_replace(true);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.check_end();
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_starting_site_is_waited_on_briefly_and_other_holds_are_not() {
        use crate::route::{Hold, Phase};
        use std::time::Duration;
        let hold = |phase| {
            Route::Hold(Hold {
                phase,
                detail: String::new(),
            })
        };
        let up: Uri = "http://127.0.0.1:9/".parse().unwrap();
        // Starting, then forwarded 300 ms later (an adoption): the request is kept.
        let (tx, rx) = crate::route::table(hold(Phase::Starting));
        let later = up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send_replace(Route::forward(later));
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        assert_eq!(settled(&rx).await, Route::forward(up.clone()));
        // A relaunch passes through Pulling (checking the image) before Starting.
        let (tx, rx) = crate::route::table(hold(Phase::Pulling));
        let later = up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send_replace(hold(Phase::Starting));
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send_replace(Route::forward(later));
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        assert_eq!(settled(&rx).await, Route::forward(up));
        // Still starting after the grace: the starting page.
        let (_tx, rx) = crate::route::table(hold(Phase::Starting));
        let t = std::time::Instant::now();
        assert_eq!(settled(&rx).await, hold(Phase::Starting));
        assert!(t.elapsed() >= START_GRACE);
        // Any other hold answers at once.
        let (_tx, rx) = crate::route::table(hold(Phase::Restarting));
        let t = std::time::Instant::now();
        assert_eq!(settled(&rx).await, hold(Phase::Restarting));
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn the_response_timeout_counts_from_the_end_of_the_request_body() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        // The body takes 300 ms to send, the answer comes 100 ms after that: within a
        // 200 ms limit, because the upload's time does not count.
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(ms(300)).await;
            tx.send_replace(true);
        });
        let answer = std::pin::pin!(async {
            tokio::time::sleep(ms(400)).await;
            "answer"
        });
        assert_eq!(within(ms(200), Some(rx), answer).await, Some("answer"));
        // Sent at once, never answered: None after the limit.
        let (_tx, rx) = tokio::sync::watch::channel(true);
        let never = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(within(ms(200), Some(rx), never).await, None);
        // Bodiless (nothing to watch): the limit counts from the start.
        let t = std::time::Instant::now();
        let never = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(within(ms(200), None, never).await, None);
        assert!(t.elapsed() < ms(1000));
    }
}
