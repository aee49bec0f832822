//! Gathered writes: response text and message bodies lent by the store go
//! to the socket together, one `sendmsg(2)` for many of them, and a body is
//! never copied in user space on its way out.
//!
//! Copying every body into one output buffer cost IMAP FETCH a sixth of its
//! CPU (`make bench-fetch`, perf); the kernel copies it anyway. Under TLS
//! the pieces go through rustls in order, which encrypts straight from
//! them: still no copy of our own.

use crate::conn::Connection;
use glommio::net::TcpStream;
use ringpost_storage::Pinned;
use socket2::SockRef;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Bodies smaller than this are copied into the text: for them a copy is
/// cheaper than holding the engine's buffer and one more I/O vector.
const COPY_BELOW: usize = 8 * 1024;
/// Most I/O vectors one `sendmsg` takes (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Bytes queued for one gathered write.
#[derive(Default)]
pub(crate) struct Gather<'a> {
    /// Rendered response text, in order; [`Part::Text`] points into it.
    text: Vec<u8>,
    /// Bodies held until written; [`Part::Body`] indexes them.
    bodies: Vec<Pinned<'a>>,
    parts: Vec<Part>,
    len: usize,
}

/// One piece of the output, in the order it goes out.
enum Part {
    Text(Range<usize>),
    Body(usize),
}

impl<'a> Gather<'a> {
    /// Queue response text.
    pub fn text(&mut self, bytes: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        self.len += bytes.len();
        // Text right after text is one piece.
        if let Some(Part::Text(range)) = self.parts.last_mut() {
            if range.end == start {
                range.end = self.text.len();
                return;
            }
        }
        self.parts.push(Part::Text(start..self.text.len()));
    }

    /// Queue a body; it is held, not copied, until written.
    pub fn body(&mut self, body: Pinned<'a>) {
        if body.len() < COPY_BELOW {
            return self.text(&body);
        }
        self.len += body.len();
        self.parts.push(Part::Body(self.bodies.len()));
        self.bodies.push(body);
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Write everything queued, then forget it (keeping the buffers).
    /// In plaintext the bodies go to the socket straight from the store;
    /// under TLS rustls encrypts from them into its records (kernel TLS,
    /// which would keep the zero-copy path, is not available everywhere),
    /// and under COMPRESS the compressor reads them.
    pub async fn write_to(&mut self, conn: &mut Connection) -> io::Result<()> {
        if let Some(stream) = conn.plain_socket() {
            self.send_plain(stream).await?;
        } else {
            let pieces: Vec<&[u8]> = self
                .parts
                .iter()
                .map(|part| match part {
                    Part::Text(range) => &self.text[range.clone()],
                    Part::Body(index) => &self.bodies[*index][..],
                })
                .collect();
            conn.write_pieces(&pieces).await?;
        }
        self.text.clear();
        self.bodies.clear();
        self.parts.clear();
        self.len = 0;
        Ok(())
    }

    /// One `sendmsg(2)` for many pieces, waiting on the reactor when the
    /// socket is full.
    async fn send_plain(&self, stream: &mut TcpStream) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Text(range) => IoSlice::new(&self.text[range.clone()]),
                Part::Body(index) => IoSlice::new(&self.bodies[*index]),
            })
            .collect();
        let mut left = &mut slices[..];
        // SAFETY: the descriptor belongs to `stream`, which outlives this
        // call and is not closed during it (it is borrowed mutably here).
        let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let socket = SockRef::from(&fd);
        while !left.is_empty() {
            let batch = left.len().min(MAX_IOVECS);
            let sent = match socket
                .send_vectored_with_flags(&left[..batch], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            {
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The socket buffer is full: let the reactor wait for room,
                // writing the first piece (or some of it) when there is.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    futures_lite::AsyncWriteExt::write(stream, &left[0]).await?
                }
                Err(e) => return Err(e),
            };
            if sent == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut left, sent);
        }
        Ok(())
    }
}
