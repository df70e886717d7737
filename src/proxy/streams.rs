//! HTTP/2 streams run inside their connection's task.
//!
//! hyper's HTTP/2 server hands each stream (the service future and the sending of its
//! response) to an executor. With tokio's, every request is a task of its own: a task
//! allocated and freed, scheduled, and woken across tasks each time it queues a frame
//! for the connection to write or the connection has something for it. Here the
//! executor is the connection's: [`Exec`] collects the streams and [`WithStreams`]
//! polls them in the connection's own task, next to the connection, so a response
//! queued by a stream is written in the same poll, with no other task involved. The
//! worker is single-threaded, so this takes nothing from parallelism.
//!
//! hyper calls the executor from inside the connection's poll (a new stream), or a
//! stream's (an extended CONNECT tunnel, which the proxy does not enable); the inbox
//! is emptied into the stream set after each, so nothing waits for another wake-up.
//!
//! A stream that panics ends alone, as a task of its own would: the panic is caught
//! at the stream (the panic hook prints it), logged, and the connection's other
//! streams go on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, StreamExt};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How often one poll goes round (streams, connection, new streams) before it lets
/// the worker's other connections run.
const ROUNDS: usize = 8;

#[derive(Default)]
struct Inbox {
    /// Emptied in place, so it keeps its storage (no allocation per stream).
    queue: Mutex<Vec<Task>>,
    /// Set while the connection is being polled: what is queued then is picked up
    /// before the poll returns, without waking the task.
    polling: AtomicBool,
    waker: AtomicWaker,
}

impl Inbox {
    /// Moves what was queued into `streams`; false when nothing was.
    fn drain_into(&self, streams: &mut FuturesUnordered<Task>) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_empty() {
            return false;
        }
        // Pushing onto the set runs nothing, so nothing can queue meanwhile.
        streams.extend(queue.drain(..));
        true
    }
}

/// The executor given to hyper for one connection.
#[derive(Clone, Default)]
pub struct Exec {
    inbox: Arc<Inbox>,
}

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let stream = async move {
            // The panic hook has printed the message and where; this says what it cost.
            if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                tracing::error!("an HTTP/2 stream panicked; the connection's other streams go on");
            }
        };
        self.inbox
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::pin(stream));
        if !self.inbox.polling.load(Ordering::Acquire) {
            self.inbox.waker.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection future with the streams its executor was given: ready when the
    /// connection has ended and every stream has finished.
    pub struct WithStreams<C, O> {
        #[pin]
        conn: C,
        inbox: Arc<Inbox>,
        streams: FuturesUnordered<Task>,
        ended: Option<O>,
    }
}

impl<C: Future<Output = O>, O> WithStreams<C, O> {
    /// `conn` must have been made with `exec`.
    pub fn new(conn: C, exec: &Exec) -> WithStreams<C, O> {
        WithStreams {
            conn,
            inbox: exec.inbox.clone(),
            streams: FuturesUnordered::new(),
            ended: None,
        }
    }

    /// The connection itself (to shut it down gracefully).
    pub fn conn(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().conn
    }
}

impl<C: Future<Output = O>, O> Future for WithStreams<C, O> {
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let mut this = self.project();
        this.inbox.waker.register(cx.waker());
        this.inbox.polling.store(true, Ordering::Release);
        let mut rounds = 0;
        loop {
            // Streams first: what they queue is written by the connection's poll below.
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {}
            if this.ended.is_none()
                && let Poll::Ready(out) = this.conn.as_mut().poll(cx)
            {
                *this.ended = Some(out);
            }
            if !this.inbox.drain_into(this.streams) {
                break;
            }
            rounds += 1;
            if rounds == ROUNDS {
                cx.waker().wake_by_ref();
                break;
            }
        }
        this.inbox.polling.store(false, Ordering::Release);
        // Queued by another thread between the last look and `polling` going false.
        if !this
            .inbox
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            cx.waker().wake_by_ref();
        }
        if this.streams.is_empty()
            && let Some(out) = this.ended.take()
        {
            return Poll::Ready(out);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_panicking_stream_ends_alone() {
        let exec = Exec::default();
        let served = Arc::new(AtomicUsize::new(0));
        let (end_conn, conn_ended) = tokio::sync::oneshot::channel::<()>();
        let conn = WithStreams::new(
            async move {
                let _ = conn_ended.await;
                "conn done"
            },
            &exec,
        );
        exec.execute(async { panic!("a bug in one stream") });
        for _ in 0..3 {
            let served = served.clone();
            exec.execute(async move {
                tokio::task::yield_now().await;
                served.fetch_add(1, Ordering::SeqCst);
            });
        }
        let _ = end_conn.send(());
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), conn)
            .await
            .expect("the connection ends once its streams have");
        assert_eq!(out, "conn done");
        assert_eq!(
            served.load(Ordering::SeqCst),
            3,
            "the other streams finished"
        );
    }
}
