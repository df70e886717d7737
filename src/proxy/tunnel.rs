//! WebSocket (and any HTTP/1.1 upgrade) tunnels: once both sides have switched
//! protocols, bytes are copied both ways untouched until either side closes or the
//! tunnel has been idle for the idle timeout. There is no absolute lifetime: Open
//! WebUI's socket.io connection lives as long as the browser tab.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Joins the client's and the upstream's upgraded connections and copies between them.
pub async fn run(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, path: String) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(target: "webui::proxy", error = %e, %path, "upgrade did not complete");
            return;
        }
    };
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity {
        io: TokioIo::new(client),
        last: last.clone(),
        epoch,
    };
    let mut upstream = Activity {
        io: TokioIo::new(upstream),
        last: last.clone(),
        epoch,
    };
    let copy = copy_both(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = epoch + since + idle;
        tokio::select! {
            res = &mut copy => {
                if let Err(e) = res {
                    tracing::debug!(target: "webui::proxy", error = %e, %path, "tunnel closed");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let quiet = epoch.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    tracing::debug!(target: "webui::proxy", %path, "tunnel idle for {idle:?}, closing");
                    return;
                }
            }
        }
    }
}

/// Bytes copied from one side to the other, holding no buffer while the tunnel is idle.
///
/// `tokio::io::copy_bidirectional` keeps a buffer per direction for the tunnel's whole
/// life (2 x 16 KiB per WebSocket, most of its memory). Here each read goes into a
/// buffer on the stack and is written on at once; only what the writer cannot take yet
/// is kept, on the heap, until it can. An idle tunnel holds no copy buffer at all.
#[derive(Default)]
struct Direction {
    /// Read but not yet written (backpressure), and how much of it is written.
    pending: Option<(Box<[u8]>, usize)>,
    /// Written since the last flush.
    unflushed: bool,
    /// The reader reached end of stream.
    eof: bool,
    done: bool,
}

const COPY_CHUNK: usize = 16 << 10;

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<std::io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if let Some((buf, written)) = &mut self.pending {
                while *written < buf.len() {
                    let n = ready!(writer.as_mut().poll_write(cx, &buf[*written..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    *written += n;
                    self.unflushed = true;
                }
                self.pending = None;
            }
            if self.eof {
                if self.unflushed {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    self.unflushed = false;
                }
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); COPY_CHUNK];
            let mut rb = ReadBuf::uninit(&mut stack);
            match reader.as_mut().poll_read(cx, &mut rb) {
                Poll::Pending => {
                    if self.unflushed {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let data = rb.filled();
            if data.is_empty() {
                self.eof = true;
                continue;
            }
            let mut off = 0;
            while off < data.len() {
                match writer.as_mut().poll_write(cx, &data[off..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        off += n;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.pending = Some((data[off..].into(), 0));
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// Copies both ways until both sides have closed (each side's write half is shut down
/// when the other side's read half ends), or an error.
async fn copy_both<A, B>(a: &mut A, b: &mut B) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    std::future::poll_fn(|cx| {
        if !a_to_b.done {
            let _ = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        }
        if !b_to_a.done {
            let _ = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        }
        if a_to_b.done && b_to_a.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// An I/O object that records when bytes last moved through it.
struct Activity<T> {
    io: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Activity<T> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
