//! A write buffer for a WebSocket: the frames written between two flushes go
//! out in one system call, so a burst (a push and an ack, a page of entries)
//! costs one write. A write never waits (the connection flushes once
//! [`LIMIT`] bytes are buffered), so frames are written without a future
//! to keep. It holds no memory between bursts, so idle connections stay
//! small.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

/// Bytes buffered before the connection flushes without waiting for the
/// end of its step.
pub const LIMIT: usize = 64 * 1024;

pub struct Coalesce<W> {
    inner: W,
    buf: Vec<u8>,
    /// How much of `buf` is written already.
    written: usize,
}

impl<W: AsyncWrite + Unpin> Coalesce<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        // Give the memory back: an idle connection keeps no buffer.
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Coalesce<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut n = 0;
        for b in bufs {
            this.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn frames_go_out_at_the_flush_in_order() -> io::Result<()> {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut out = Coalesce::new(near);
        out.write_all(b"one ").await?;
        let n = out
            .write_vectored(&[io::IoSlice::new(b"two "), io::IoSlice::new(b"three")])
            .await?;
        assert_eq!(n, 9);
        let mut got = [0u8; 13];
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut got))
                .await
                .is_err(),
            "nothing is written before the flush"
        );
        out.flush().await?;
        far.read_exact(&mut got).await?;
        assert_eq!(&got, b"one two three");
        assert_eq!(out.buf.capacity(), 0, "no memory kept after a flush");
        // A write never waits, even past the limit (the caller flushes).
        let big = vec![7u8; LIMIT + 1];
        assert!(
            futures::FutureExt::now_or_never(out.write_all(&big)).is_some(),
            "a write completes at once"
        );
        out.flush().await?;
        let mut first = vec![0u8; LIMIT + 1];
        far.read_exact(&mut first).await?;
        assert_eq!(first, big);
        Ok(())
    }
}
