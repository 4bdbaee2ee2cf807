//! Socket reads into a buffer's unused capacity, so that a request frame is not zeroed before
//! it is read.
//!
//! glommio 0.9's stream reads fill a `&mut [u8]`, initialised memory, so a frame read through
//! them had to be zeroed first: a memset of every byte produced, 7% of the broker's samples in
//! durable produce. Here bytes are received with recv(2) (MSG_DONTWAIT) straight into the spare
//! capacity of the frame's buffer. Only when the socket has nothing to give does a read go
//! through glommio's stream, whose reactor waits for the socket; that read lands in a small
//! zeroed piece of the buffer, and the frame goes on with recv(2).

use std::io;
use std::os::fd::RawFd;

use bytes::BytesMut;
use futures::{AsyncRead, AsyncReadExt};

/// The most a read that waits for the socket takes through glommio: zeroed first, so small.
const WAITING_READ_BYTES: usize = 4096;

/// Appends exactly `len` bytes read from `socket` to `buf`. `reader` reads the same socket (the
/// connection's read half of it) and is used only when the socket has nothing to give, to
/// wait. An end of stream before `len` bytes is `UnexpectedEof`, as `read_exact` has it.
pub async fn read_exact_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    socket: RawFd,
    buf: &mut BytesMut,
    len: usize,
) -> io::Result<()> {
    let end = buf.len() + len;
    buf.reserve(len);
    while buf.len() < end {
        let wanted = end - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..wanted];
        // SAFETY: `spare` is writable memory of `buf`, `spare.len()` bytes long, borrowed
        // mutably for the call; recv(2) writes at most that many bytes there, and reads
        // nothing from it.
        let received = unsafe { libc::recv(socket, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
        match usize::try_from(received) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                // SAFETY: recv(2) initialised the first `n` bytes of the spare capacity, and
                // `n <= spare.len()`, so the new length is within the capacity.
                unsafe { buf.set_len(buf.len() + n) };
            }
            Err(_) => {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock => wait_and_read(reader, buf, end).await?,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(error),
                }
            }
        }
    }
    Ok(())
}

/// Reads at most [`WAITING_READ_BYTES`] (and at most up to `end`) through `reader`, which waits
/// until the socket has something.
async fn wait_and_read<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut, end: usize) -> io::Result<()> {
    let start = buf.len();
    buf.resize(start + (end - start).min(WAITING_READ_BYTES), 0);
    let read = reader.read(&mut buf[start..]).await;
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    match read? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::pin::Pin;
    use std::sync::mpsc;
    use std::task::{Context, Poll};

    use super::*;
    use crate::runtime::TcpStream;
    use crate::runtime::file::block_on;

    /// The socket's own reader, telling `waiting` each time it finds nothing to read.
    struct Watched {
        inner: TcpStream,
        waiting: mpsc::Sender<()>,
    }

    impl AsyncRead for Watched {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
            if poll.is_pending() {
                let _ = self.waiting.send(());
            }
            poll
        }
    }

    #[test]
    fn a_frame_sent_in_pieces_arrives_whole_after_what_was_there_and_an_early_end_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let frame: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let pieces = [1, 70_000, 3, 100_000, 129_996];
        assert_eq!(pieces.iter().sum::<usize>(), frame.len());
        let (waiting, waits) = mpsc::channel();
        let sent = frame.clone();
        let wanted = frame.len();
        // Each piece after the first goes once the reader has taken everything before it and
        // waits, so that every piece but the first is met by the waiting path.
        let sender = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut at = 0;
            for (i, len) in pieces.into_iter().enumerate() {
                if i > 0 {
                    waits.recv_timeout(std::time::Duration::from_secs(60)).expect("the reader waits for more");
                }
                peer.write_all(&sent[at..at + len]).unwrap();
                at += len;
            }
            peer.write_all(b"the next frame, cut").unwrap();
        });
        let (read, early_end) = block_on(async move {
            let inner = TcpStream::connect(address).await.unwrap();
            let socket = inner.as_raw_fd();
            let mut reader = Watched { inner, waiting };
            let mut read = BytesMut::from(&b"before"[..]);
            read_exact_into(&mut reader, socket, &mut read, wanted).await.unwrap();
            sender.join().unwrap();
            let mut next = BytesMut::new();
            let early_end = read_exact_into(&mut reader, socket, &mut next, 100).await.unwrap_err();
            (read, early_end)
        });
        let mut expected = b"before".to_vec();
        expected.extend_from_slice(&frame);
        assert!(read[..] == expected[..], "the frame arrived whole, in order, after what the buffer held");
        assert_eq!(early_end.kind(), io::ErrorKind::UnexpectedEof);
    }
}
