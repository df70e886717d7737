//! A small HTTP/1.1 client for the requests that carry no body and upgrade nothing:
//! most of what a browser asks for (pages, assets, API reads, GET event streams,
//! downloads).
//!
//! hyper's client connection is a task of its own that a request reaches through a
//! channel, and whose response comes back through another; on this path the request's
//! own task writes the head, reads the response and passes the body on, and the
//! connection goes back to the pool the moment the response has been read to its end.
//! Requests with a body, and upgrades, keep going through hyper (`upstream`): a body
//! must be sent while the response may already be coming, which is where a protocol
//! implementation earns its keep.
//!
//! The response is framed as RFC 9112 section 6 says: no body for HEAD, 1xx, 204 and
//! 304; chunked when `Transfer-Encoding` ends in `chunked` (then any
//! `Content-Length` is ignored and removed); else `Content-Length` (several differing
//! values are an error); else up to the close of the connection, which is then not
//! reused. Interim 1xx responses are skipped. Chunk extensions and trailers are read
//! and dropped. Each piece of body is passed on as soon as it has been read: nothing
//! is held back (SSE).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::headers::lists_token;
use super::upstream::Home;

/// At most this many response headers (hyper's client default).
const MAX_HEADERS: usize = 100;
/// A response head (status line and headers) larger than this is refused (nginx's
/// default for one is 4 or 8 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size line or one trailer longer than this is refused.
const MAX_LINE: usize = 8 * 1024;
/// The first read of a body asks for this much; reads that fill it double it, up to
/// [`MAX_READ`] (a download is read in large pieces, a small response in one).
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// An upstream connection and what has been read from it but not yet used.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum Fail {
    /// The connection was gone before any of the response came (written to a
    /// connection the upstream had closed, or closed before answering): the upstream
    /// may not have seen the request. `unsent`: the head could not even be written.
    Lost { error: io::Error, unsent: bool },
    /// The connection failed after part of the response came, or the upstream sent
    /// something that is not an HTTP/1.1 response.
    Broken(io::Error),
}

impl Fail {
    pub fn into_error(self) -> io::Error {
        match self {
            Fail::Lost { error, .. } | Fail::Broken(error) => error,
        }
    }
}

fn broken(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The request head to send for `req`, which has no body: request line, its headers
/// and, for a method whose requests usually have a body, `Content-Length: 0`.
pub fn encode_head<B>(req: &Request<B>) -> Vec<u8> {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let headers = req.headers();
    let mut out = Vec::with_capacity(64 + target.len() + 32 * headers.len());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // Framed here: there is no body.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let payload_method = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if payload_method {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

impl Conn {
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether the connection can still take a request: the upstream has neither
    /// closed it nor sent anything unasked while it was idle. Asks the socket only
    /// when the runtime saw it become readable since the last read that emptied it
    /// (a short read clears that), so a connection reused under load costs no
    /// syscall here.
    pub fn is_open(&self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.io.poll_peek(&mut cx, &mut buf).is_pending()
    }

    /// Writes `head` and reads the response head. `head_request`: the request was a
    /// HEAD, so the response has no body whatever its headers say. On success the
    /// connection is in the returned body, which reads the rest and then hands it to
    /// `home`.
    pub async fn send(
        mut self,
        head: &[u8],
        head_request: bool,
        home: Home,
    ) -> Result<(http::response::Parts, Body), Fail> {
        if let Err(error) = self.io.write_all(head).await {
            return Err(Fail::Lost {
                error,
                unsent: true,
            });
        }
        let mut got_any = false;
        loop {
            match parse_head(&mut self.buf).map_err(Fail::Broken)? {
                Some(parts) if parts.status.is_informational() => {
                    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Fail::Broken(broken(
                            "upstream switched protocols without being asked to",
                        )));
                    }
                    // 100 Continue, 103 Early Hints: the final response follows.
                    continue;
                }
                Some(mut parts) => {
                    let (framing, reusable) =
                        framing(&mut parts, head_request).map_err(Fail::Broken)?;
                    let body = Body::new(self, framing, reusable, home);
                    return Ok((parts, body));
                }
                None if self.buf.len() >= MAX_HEAD => {
                    return Err(Fail::Broken(broken(format!(
                        "upstream response head larger than {} KiB",
                        MAX_HEAD / 1024
                    ))));
                }
                None => {}
            }
            self.buf.reserve(FIRST_READ);
            let read = tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.buf).await;
            match read {
                Ok(0) | Err(_) if !got_any => {
                    let error = read.err().unwrap_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "upstream closed the connection without answering",
                        )
                    });
                    return Err(Fail::Lost {
                        error,
                        unsent: false,
                    });
                }
                Ok(0) => {
                    return Err(Fail::Broken(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection in the middle of the response head",
                    )));
                }
                Ok(_) => got_any = true,
                Err(e) => return Err(Fail::Broken(e)),
            }
        }
    }
}

/// A complete response head at the start of `buf`, taken off it; None when more is
/// needed. Header values are slices of the head's bytes, not copies.
fn parse_head(buf: &mut BytesMut) -> io::Result<Option<http::response::Parts>> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Offsets into `buf` of each header's name and value, so that the head can be
    // split off before the values are made from it.
    let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
    let (len, code, version, count) = {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let len = match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(broken(format!(
                    "upstream sent an invalid response head: {e}"
                )));
            }
        };
        let base = buf.as_ptr() as usize;
        let count = res.headers.len();
        for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            *span = (name, name + h.name.len(), value, value + h.value.len());
        }
        (len, res.code.unwrap_or(0), res.version.unwrap_or(1), count)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| broken("invalid status code"))?;
    // Room for what the proxy adds to every response (HSTS, nosniff, a cookie, CORS)
    // without growing the map again.
    let mut headers = HeaderMap::with_capacity(count + 4);
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| broken("invalid header name in the response"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| broken("invalid header value in the response"))?;
        headers.append(name, value);
    }
    let mut res = http::Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *res.headers_mut() = headers;
    Ok(Some(res.into_parts().0))
}

/// How the body of this response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// The response's framing, and whether the connection can take another request
/// after it. `Transfer-Encoding`'s framing is ours alone: `Content-Length` goes when
/// it is chunked.
fn framing(parts: &mut http::response::Parts, head_request: bool) -> io::Result<(Framing, bool)> {
    let h = &parts.headers;
    let connection = |token| {
        h.get_all(header::CONNECTION)
            .iter()
            .any(|v| lists_token(v, token))
    };
    let mut reusable = if parts.version == Version::HTTP_11 {
        !connection("close")
    } else {
        connection("keep-alive")
    };
    let s = parts.status;
    // Some(whether the last coding is chunked) when there is a Transfer-Encoding.
    let coded = h.contains_key(header::TRANSFER_ENCODING).then(|| {
        h.get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    });
    let framing = if head_request || s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED {
        Framing::Length(0)
    } else if let Some(chunked) = coded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if h.contains_key(header::CONTENT_LENGTH) {
        let mut len = None;
        for v in h.get_all(header::CONTENT_LENGTH) {
            for part in v.to_str().unwrap_or("x").split(',') {
                let n: u64 = part
                    .trim()
                    .parse()
                    .map_err(|_| broken("invalid Content-Length in the response"))?;
                if len.is_some_and(|l| l != n) {
                    return Err(broken("conflicting Content-Length values in the response"));
                }
                len = Some(n);
            }
        }
        Framing::Length(len.unwrap_or(0))
    } else {
        Framing::Close
    };
    if coded.is_some() {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if framing == Framing::Close {
        reusable = false;
    }
    Ok((framing, reusable))
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This much of the current chunk's data to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero-size) chunk: trailer lines up to an empty one.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

impl State {
    fn new(framing: Framing) -> State {
        match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        }
    }

    /// Moves past what needs no reading from the caller's side (the CRLF after a
    /// chunk, chunk-size lines, the last chunk and trailers), as far as the bytes in
    /// `buf` allow, so that the end of the body is known as soon as its bytes are in:
    /// `is_end_stream` then says so with the last piece of data (an HTTP/2 client
    /// gets END_STREAM on that DATA frame).
    fn settle(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        while let State::Chunked(chunk) = *self {
            *self = match chunk {
                Chunk::Data(_) => return Ok(()),
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(broken("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    State::Chunked(Chunk::Size)
                }
                Chunk::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buf.advance(used);
                        State::Chunked(Chunk::Trailers)
                    }
                    Ok(httparse::Status::Complete((used, n))) => {
                        buf.advance(used);
                        State::Chunked(Chunk::Data(n))
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Err(broken("chunk-size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(()),
                    Err(_) => return Err(broken("invalid chunk size")),
                },
                Chunk::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        State::Done
                    } else if buf.starts_with(b"\n") {
                        buf.advance(1);
                        State::Done
                    } else if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                        // A trailer field: dropped.
                        buf.advance(i + 1);
                        State::Chunked(Chunk::Trailers)
                    } else if buf.len() > MAX_LINE {
                        return Err(broken("trailer line too long"));
                    } else {
                        return Ok(());
                    }
                }
            };
        }
        Ok(())
    }

    /// Body bytes at the start of `buf`, taken off it.
    fn take(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        if buf.is_empty() {
            return None;
        }
        let (n, next) = match *self {
            State::Length(left) => {
                let n = left.min(buf.len() as u64);
                let next = if n == left {
                    State::Done
                } else {
                    State::Length(left - n)
                };
                (n as usize, next)
            }
            State::Chunked(Chunk::Data(left)) => {
                let n = left.min(buf.len() as u64);
                let next = if n == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n)
                };
                (n as usize, State::Chunked(next))
            }
            State::Close => (buf.len(), State::Close),
            State::Chunked(_) | State::Done => return None,
        };
        let data = buf.split_to(n).freeze();
        *self = next;
        Some(data)
    }
}

/// A response body read straight from its upstream connection.
pub struct Body {
    conn: Option<Conn>,
    state: State,
    reusable: bool,
    read_size: usize,
    /// Where the connection goes once the response has been read to its end.
    home: Option<Home>,
    /// A framing error found while the body was made, returned by the first poll.
    error: Option<io::Error>,
}

impl Body {
    fn new(conn: Conn, framing: Framing, reusable: bool, home: Home) -> Body {
        let mut body = Body {
            conn: Some(conn),
            state: State::new(framing),
            reusable,
            read_size: FIRST_READ,
            home: Some(home),
            error: None,
        };
        if let Err(e) = body.settle() {
            body.error = Some(e);
        }
        body
    }

    /// The connection, to its home when it can take another request, else closed.
    fn release(&mut self) {
        let (Some(home), Some(mut conn)) = (self.home.take(), self.conn.take()) else {
            return;
        };
        // Bytes beyond the response: the upstream said more than it framed.
        if self.reusable && conn.buf.is_empty() {
            // What is left of a large read (a download's, up to MAX_READ) is not
            // kept by an idle connection.
            if conn.buf.capacity() > 2 * FIRST_READ {
                conn.buf = BytesMut::new();
            }
            home.put(conn);
        }
    }

    /// Moves past what is framing, not data, as far as the buffered bytes allow
    /// ([`State::settle`]); hands the connection on when the body is over.
    fn settle(&mut self) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        self.state.settle(&mut conn.buf)?;
        if self.state == State::Done {
            self.release();
        }
        Ok(())
    }

    /// Body bytes already read, taken off the buffer.
    fn take_buffered(&mut self) -> Option<Bytes> {
        self.state.take(&mut self.conn.as_mut()?.buf)
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return this.fail(e);
        }
        loop {
            if let Err(e) = this.settle() {
                return this.fail(e);
            }
            // `settle` has handed the connection on.
            if this.state == State::Done {
                return Poll::Ready(None);
            }
            if let Some(data) = this.take_buffered() {
                if let Err(e) = this.settle() {
                    return this.fail(e);
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            conn.buf.reserve(this.read_size);
            let want = conn.buf.capacity() - conn.buf.len();
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) if this.state == State::Close => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection before the end of the response body",
                    ));
                }
                Ok(n) => {
                    if n >= want {
                        this.read_size = (this.read_size * 2).min(MAX_READ);
                    }
                }
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// For the fuzz target of the response reader (`crate::fuzzing`): `input` as what an
/// upstream sent, arriving in reads of `step` bytes, read as the answer to a HEAD
/// request or not. Panics when an invariant breaks.
pub(crate) fn fuzz_response(input: &[u8], step: usize, head_request: bool) {
    let mut buf = BytesMut::new();
    let mut reads = input.chunks(step.max(1));
    let mut parts = loop {
        match parse_head(&mut buf) {
            Err(_) => return,
            Ok(Some(p)) if p.status.is_informational() => continue,
            Ok(Some(p)) => break p,
            Ok(None) if buf.len() >= MAX_HEAD => return,
            Ok(None) => match reads.next() {
                Some(r) => buf.extend_from_slice(r),
                None => return,
            },
        }
    };
    let Ok((framing, reusable)) = framing(&mut parts, head_request) else {
        return;
    };
    assert!(!(reusable && framing == Framing::Close));
    if framing == Framing::Chunked {
        assert!(!parts.headers.contains_key(header::CONTENT_LENGTH));
    }
    let mut state = State::new(framing);
    let mut got = 0u64;
    loop {
        if state.settle(&mut buf).is_err() {
            return;
        }
        if state == State::Done {
            break;
        }
        if let Some(data) = state.take(&mut buf) {
            assert!(!data.is_empty(), "an empty piece of body");
            got += data.len() as u64;
            continue;
        }
        match reads.next() {
            Some(r) => buf.extend_from_slice(r),
            None => break,
        }
    }
    assert!(got <= input.len() as u64);
    match framing {
        Framing::Length(n) if state == State::Done => assert_eq!(got, n),
        Framing::Length(n) => assert!(got < n),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::upstream::Pool;
    use http::uri::Authority;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// An upstream on one connection: for each response, reads a request head (kept,
    /// returned at the end), then writes the response in its pieces 30 ms apart, so
    /// that they reach the client in separate reads. Closes after the last one.
    async fn upstream(
        responses: Vec<Vec<&'static str>>,
    ) -> (Authority, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to: Authority = l.local_addr().unwrap().to_string().parse().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut heads = Vec::new();
            let mut buf = Vec::new();
            for pieces in responses {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return heads,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                heads.push(String::from_utf8_lossy(&buf[..end]).into_owned());
                buf.drain(..end);
                for piece in pieces {
                    s.write_all(piece.as_bytes()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            heads
        });
        (to, task)
    }

    fn request(method: Method, path: &str) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("up"));
        req
    }

    /// Sends `req` on `conn` (else a new connection), reads the whole body; the body's
    /// frames, and whether the body said it was over along with its last data.
    async fn fetch(
        pool: &Arc<Pool>,
        to: &Authority,
        conn: Option<Conn>,
        req: Request<()>,
    ) -> Result<(http::response::Parts, Vec<Bytes>, bool), io::Error> {
        let conn = match conn {
            Some(c) => c,
            None => Conn::new(TcpStream::connect(to.as_str()).await.unwrap()),
        };
        let head_request = req.method() == Method::HEAD;
        let home = Home::new(pool.clone(), to.clone());
        let (parts, mut body) = conn
            .send(&encode_head(&req), head_request, home)
            .await
            .map_err(Fail::into_error)?;
        let mut frames = Vec::new();
        let mut ended_with_data = body.is_end_stream();
        while let Some(frame) = body.frame().await {
            frames.push(frame?.into_data().unwrap());
            ended_with_data = body.is_end_stream();
        }
        Ok((parts, frames, ended_with_data))
    }

    fn joined(frames: &[Bytes]) -> String {
        frames
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn every_framing_arrives_whole_and_the_connection_is_reused_when_it_can_be() {
        let (to, up) = upstream(vec![
            // Content-Length, the body in two reads.
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhel", "lo"],
            // Chunked (Content-Length ignored), with an extension and a trailer,
            // chunk boundaries across reads.
            vec![
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-length: 99\r\n\r\n4;ext=1\r\nwi",
                "ki\r\n5\r\npedia\r",
                "\n0\r\nx-trailer: 1\r\n\r\n",
            ],
            // HEAD: no body, whatever Content-Length says.
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"],
            // An interim 100, then 204.
            vec!["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
            // Connection: close: read, then not reused.
            vec!["HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
        ])
        .await;
        let pool = Pool::new(Duration::from_secs(1));

        let (parts, frames, _) = fetch(&pool, &to, None, request(Method::GET, "/a?q=1"))
            .await
            .unwrap();
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["x-a"], "1");
        assert_eq!(joined(&frames), "hello");
        assert!(frames.len() >= 2, "each read passed on at once: {frames:?}");

        let conn = pool
            .take_plain(&to)
            .expect("reused after a Content-Length body");
        let (parts, frames, _) = fetch(&pool, &to, Some(conn), request(Method::GET, "/b"))
            .await
            .unwrap();
        assert_eq!(joined(&frames), "wikipedia");
        assert!(!parts.headers.contains_key(header::CONTENT_LENGTH));

        let conn = pool.take_plain(&to).expect("reused after a chunked body");
        let (parts, frames, ended) = fetch(&pool, &to, Some(conn), request(Method::HEAD, "/c"))
            .await
            .unwrap();
        assert_eq!(parts.headers[header::CONTENT_LENGTH], "1000");
        assert!(frames.is_empty() && ended);

        let conn = pool.take_plain(&to).expect("reused after HEAD");
        let (parts, frames, _) = fetch(&pool, &to, Some(conn), request(Method::POST, "/d"))
            .await
            .unwrap();
        assert_eq!(parts.status, 204);
        assert!(frames.is_empty());

        let conn = pool.take_plain(&to).expect("reused after 100 and 204");
        let (_, frames, _) = fetch(&pool, &to, Some(conn), request(Method::GET, "/e"))
            .await
            .unwrap();
        assert_eq!(joined(&frames), "ok");
        assert!(
            pool.take_plain(&to).is_none(),
            "Connection: close is not reused"
        );

        let heads = up.await.unwrap();
        let lines: Vec<&str> = heads.iter().map(|h| h.lines().next().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "GET /a?q=1 HTTP/1.1",
                "GET /b HTTP/1.1",
                "HEAD /c HTTP/1.1",
                "POST /d HTTP/1.1",
                "GET /e HTTP/1.1"
            ],
            "all five on one connection"
        );
        assert!(heads[0].contains("host: up\r\n"));
        assert!(heads[3].contains("content-length: 0\r\n"), "{}", heads[3]);
        assert!(!heads[0].contains("content-length"), "{}", heads[0]);
    }

    #[tokio::test]
    async fn the_end_of_a_body_is_known_with_its_last_data() {
        // The last chunk and the terminator in one read, as most servers write them:
        // an HTTP/2 client gets END_STREAM on the DATA frame, not after it.
        let (to, _up) = upstream(vec![vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "3\r\nabc\r\n0\r\n\r\n",
        ]])
        .await;
        let pool = Pool::new(Duration::from_secs(1));
        let (_, frames, ended) = fetch(&pool, &to, None, request(Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(joined(&frames), "abc");
        assert!(ended, "is_end_stream with the last data frame");
        assert!(pool.take_plain(&to).is_some());
    }

    #[tokio::test]
    async fn a_body_up_to_the_close_is_read_whole_and_not_reused() {
        let (to, _up) = upstream(vec![vec!["HTTP/1.0 200 OK\r\n\r\nsome", " more"]]).await;
        let pool = Pool::new(Duration::from_secs(1));
        let (parts, frames, _) = fetch(&pool, &to, None, request(Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(parts.version, Version::HTTP_10);
        assert_eq!(joined(&frames), "some more");
        assert!(pool.take_plain(&to).is_none());
    }

    #[tokio::test]
    async fn broken_responses_are_errors_not_short_bodies() {
        let pool = Pool::new(Duration::from_secs(1));
        let cases: [(&str, &[&'static str]); 5] = [
            (
                "conflicting lengths",
                &["HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"],
            ),
            (
                "truncated length",
                &["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
            ),
            (
                "invalid chunk size",
                &["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            ),
            (
                "truncated chunk",
                &["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"],
            ),
            ("not HTTP", &["SSH-2.0-OpenSSH_9.2\r\n\r\n"]),
        ];
        for (what, pieces) in cases {
            let (to, _up) = upstream(vec![pieces.to_vec()]).await;
            let got = fetch(&pool, &to, None, request(Method::GET, "/")).await;
            assert!(
                got.is_err(),
                "{what}: {:?}",
                got.map(|(p, f, _)| (p.status, f))
            );
            assert!(pool.take_plain(&to).is_none(), "{what}");
        }
        // A head that never ends is cut off rather than buffered without bound.
        let big: &'static str = Box::leak(
            format!("HTTP/1.1 200 OK\r\nx: {}\r\n", "a".repeat(MAX_HEAD)).into_boxed_str(),
        );
        let (to, _up) = upstream(vec![vec![big]]).await;
        let conn = Conn::new(TcpStream::connect(to.as_str()).await.unwrap());
        let head = encode_head(&request(Method::GET, "/"));
        assert!(matches!(
            conn.send(&head, false, Home::new(pool.clone(), to)).await,
            Err(Fail::Broken(_))
        ));
        // Closed without a byte of answer: lost, which the pool may retry.
        let (to, _up) = upstream(vec![vec![]]).await;
        let conn = Conn::new(TcpStream::connect(to.as_str()).await.unwrap());
        assert!(matches!(
            conn.send(&head, false, Home::new(pool.clone(), to)).await,
            Err(Fail::Lost { unsent: false, .. })
        ));
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_handed_out() {
        let (to, up) = upstream(vec![vec!["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]]).await;
        let pool = Pool::new(Duration::from_secs(1));
        fetch(&pool, &to, None, request(Method::GET, "/"))
            .await
            .unwrap();
        // The upstream closes after its one response.
        up.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take_plain(&to).is_none());
    }
}
