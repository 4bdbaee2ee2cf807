//! Zero-copy sends: record bytes go from a segment file (the page cache) to the socket with
//! sendfile(2), never through user space. glommio 0.9 has no public sendfile or splice, so
//! this module fills the gap beside it.
//!
//! A Fetch response is encoded by kafka-protocol into a [`PartsBuf`]: where the encoder
//! copies the placeholder that stands for a partition's records, the buffer records a file
//! part instead. Placeholders ([`Placeholders`]) are slices of one reserved, never-touched
//! mapping, so standing in for a range costs neither an allocation nor a page. [`write_parts`] then writes memory parts with the socket's ordinary async
//! write and file parts with sendfile. glommio leaves its sockets in blocking mode (it sends
//! and receives with MSG_DONTWAIT and waits for readiness through io_uring polls), where
//! sendfile would block the whole shard once a slow reader's socket is full; so a connection
//! first makes its socket non-blocking ([`make_nonblocking`]). When sendfile then finds the
//! socket full (EAGAIN), one chunk goes through the async write, which waits for room.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;

use bytes::{BufMut, Bytes, BytesMut, buf::UninitSlice};
use futures::{AsyncWrite, AsyncWriteExt};
use kafka_protocol::protocol::buf::ByteBufMut;

/// A range of a file whose bytes are to be sent as they are.
#[derive(Debug)]
pub struct FileSlice {
    /// A descriptor of its own (dup'ed), so the range stays readable even if the segment is
    /// replaced or deleted meanwhile.
    pub file: File,
    pub position: u64,
    pub len: usize,
}

/// A piece of a response.
#[derive(Debug)]
pub enum Part {
    Memory(Bytes),
    File(FileSlice),
}

/// How many bytes of file parts went each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub zero_copy: u64,
    pub copied: u64,
}

/// Bytes a copying fallback moves at a time when the socket is full.
const FALLBACK_CHUNK_BYTES: usize = 64 * 1024;

/// Virtual size of the placeholder mapping; a response whose ranges add up to more (beyond
/// any fetch size a client may ask for) falls back to allocated placeholders.
const PLACEHOLDER_ARENA_BYTES: usize = 16 << 30;

/// The placeholder mapping: read-only, unreserved anonymous memory that nothing reads (the
/// encoder's copies of it are intercepted), so it never occupies a page.
fn placeholder_arena() -> &'static [u8] {
    static ARENA: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let address = *ARENA.get_or_init(|| {
        // SAFETY: a fresh private anonymous mapping that aliases nothing; it is never unmapped.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PLACEHOLDER_ARENA_BYTES,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED { 0 } else { pointer as usize }
    });
    if address == 0 {
        return &[];
    }
    // SAFETY: the mapping above is PLACEHOLDER_ARENA_BYTES long, readable, and lives forever.
    unsafe { std::slice::from_raw_parts(address as *const u8, PLACEHOLDER_ARENA_BYTES) }
}

/// Hands out placeholders for one response: each a distinct stretch of the arena, so that a
/// [`PartsBuf`] knows every one by its address.
#[derive(Default)]
pub struct Placeholders {
    used: usize,
}

impl Placeholders {
    pub fn make(&mut self, len: usize) -> Bytes {
        let arena = placeholder_arena();
        match arena.get(self.used..self.used + len) {
            Some(stretch) => {
                self.used += len;
                Bytes::from_static(stretch)
            }
            None => Bytes::from(vec![0u8; len]),
        }
    }
}

/// A `BufMut` that turns registered placeholders into file parts instead of copying them.
pub struct PartsBuf {
    parts: Vec<Part>,
    current: BytesMut,
    written_before: usize,
    /// (placeholder address, placeholder length, the file range it stands for).
    holes: Vec<(usize, usize, Option<FileSlice>)>,
}

impl PartsBuf {
    /// `holes` pairs each placeholder (distinct memory, never read) with its file range.
    pub fn new(capacity: usize, holes: Vec<(Bytes, FileSlice)>) -> PartsBuf {
        PartsBuf {
            parts: Vec::new(),
            current: BytesMut::with_capacity(capacity),
            written_before: 0,
            holes: holes.into_iter().map(|(p, slice)| (p.as_ptr() as usize, p.len(), Some(slice))).collect(),
        }
    }

    pub fn into_parts(mut self) -> Vec<Part> {
        assert!(self.holes.iter().all(|(_, _, s)| s.is_none()), "every placeholder was encoded");
        if !self.current.is_empty() {
            self.parts.push(Part::Memory(self.current.split().freeze()));
        }
        self.parts
    }
}

// SAFETY: every method forwards to the inner `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` only ever appends, through `BytesMut::put_slice` or by starting a new part.
unsafe impl BufMut for PartsBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is the inner buffer's.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let address = src.as_ptr() as usize;
        let hole = self.holes.iter_mut().find(|(a, len, s)| *a == address && *len == src.len() && s.is_some());
        match hole {
            Some((_, len, slice)) => {
                self.written_before += self.current.len() + *len;
                if !self.current.is_empty() {
                    self.parts.push(Part::Memory(self.current.split().freeze()));
                }
                self.parts.push(Part::File(slice.take().expect("checked above")));
            }
            None => self.current.put_slice(src),
        }
    }
}

impl ByteBufMut for PartsBuf {
    fn offset(&self) -> usize {
        self.written_before + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        let local = offset.checked_sub(self.written_before).expect("no seeking back past a file part");
        self.current.resize(local, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let start = r.start.checked_sub(self.written_before).expect("no gaps before a file part");
        &mut self.current[start..r.end - self.written_before]
    }
}

impl Part {
    pub fn len(&self) -> usize {
        match self {
            Part::Memory(bytes) => bytes.len(),
            Part::File(slice) => slice.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Puts `stream`'s socket in non-blocking mode, which [`write_parts`] needs. glommio's own
/// reads, writes and readiness polls behave the same either way.
pub fn make_nonblocking(stream: &crate::runtime::TcpStream) -> std::io::Result<()> {
    use nix::fcntl::{F_GETFL, F_SETFL, OFlag, fcntl};
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
    let flags = OFlag::from_bits_truncate(fcntl(fd, F_GETFL)?);
    fcntl(fd, F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Writes `parts` in order to `writer`, whose socket descriptor is `socket`; the connection
/// that owns both keeps the socket open for the whole call.
pub async fn write_parts<W: AsyncWrite + Unpin>(
    writer: &mut W,
    socket: RawFd,
    parts: Vec<Part>,
) -> std::io::Result<Sent> {
    // SAFETY: the caller owns the open socket for the duration of this call (see above).
    let socket = unsafe { BorrowedFd::borrow_raw(socket) };
    let mut sent = Sent::default();
    for part in parts {
        match part {
            Part::Memory(bytes) => writer.write_all(&bytes).await?,
            Part::File(slice) => send_file(writer, socket, &slice, &mut sent).await?,
        }
    }
    Ok(sent)
}

async fn send_file<W: AsyncWrite + Unpin>(
    writer: &mut W,
    socket: BorrowedFd<'_>,
    slice: &FileSlice,
    sent: &mut Sent,
) -> std::io::Result<()> {
    let end = slice.position + slice.len as u64;
    let mut position = slice.position;
    while position < end {
        let mut offset = position as i64;
        let left = (end - position) as usize;
        match nix::sys::sendfile::sendfile64(socket, slice.file.as_fd(), Some(&mut offset), left) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                position += n as u64;
                sent.zero_copy += n as u64;
            }
            Err(nix::errno::Errno::EAGAIN) => {
                // The socket is full: send a chunk the ordinary way, which waits for room.
                let mut chunk = vec![0u8; left.min(FALLBACK_CHUNK_BYTES)];
                slice.file.read_exact_at(&mut chunk, position)?;
                writer.write_all(&chunk).await?;
                position += chunk.len() as u64;
                sent.copied += chunk.len() as u64;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
