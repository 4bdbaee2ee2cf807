//! Zero-copy sends: record bytes in the page cache go from a segment file to the socket with
//! sendfile(2), never through user space; bytes that are not are read through the shard's
//! io_uring. glommio 0.9 has no public sendfile or splice, so this module fills the gap
//! beside it.
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
//!
//! sendfile also blocks the shard when the pages it sends are not in the page cache (a
//! consumer catching up on old data): the disk read happens inside the call. So a file part
//! is probed first ([`super::page_cache`]). A part wholly cached, the usual case, goes with
//! sendfile whole (each call stops when the socket is full). Any other goes out in chunks of
//! [`CHUNK_BYTES`], each probed: a chunk wholly cached goes with sendfile; any other is read
//! through the shard's io_uring, which lets the shard serve other connections while the disk
//! works, and written with the async write. Both send exactly the bytes of the range, in
//! order. After a cached part and between chunks the task yields when the shard has other
//! work due, so a consumer tailing hot data never waits behind a long send.
//!
//! The cheap probe (`cachestat`) counts pages whose readahead is still in flight as cached,
//! and the kernel reads ahead of every cold read: a consumer catching up would find its next
//! chunks "cached" and have sendfile wait for the disk after all. So a connection that met a
//! cold chunk probes with `mincore`, which counts only pages whose data is there, until one of
//! its responses finds every chunk up to date ([`Probe`]); a consumer tailing recent data
//! never meets a cold chunk and keeps the cheap probe.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;

use bytes::{BufMut, Bytes, BytesMut, buf::UninitSlice};
use futures::{AsyncWrite, AsyncWriteExt};
use kafka_protocol::protocol::buf::ByteBufMut;

use super::file::RingFile;
use super::page_cache;

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
    /// From the page cache with sendfile.
    pub zero_copy: u64,
    /// Copied from the page cache through user space, the socket being full.
    pub copied: u64,
    /// Read through io_uring, not being all in the page cache.
    pub io_uring: u64,
    /// Chunks read that way.
    pub cold_chunks: u64,
    /// Page-cache probes made: one for a range wholly cached, one per chunk otherwise.
    pub probes: u64,
}

/// Bytes a copying fallback moves at a time when the socket is full.
const FALLBACK_CHUNK_BYTES: usize = 64 * 1024;

/// A file part is probed and sent by chunks of this size: a probe costs well under a
/// microsecond (`cachestat`), and a cold chunk is one io_uring read into a buffer of this size,
/// so it also bounds the memory a connection holds for a cold read.
pub const CHUNK_BYTES: u64 = 256 * 1024;

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

/// How a connection probes the page cache: cheaply, or, since it met a cold chunk, exactly
/// (see the module's docs).
#[derive(Debug, Default)]
pub struct Probe {
    exact: bool,
}

impl Probe {
    /// Whether the chunk `position..end` of `file` can be sent with sendfile without waiting
    /// for the disk. A probe that fails tells nothing: the chunk is sent as if cached, as
    /// before probes existed.
    fn cached(&self, file: &File, position: u64, end: u64, sent: &mut Sent) -> bool {
        sent.probes += 1;
        let probe = match self.exact {
            true => page_cache::up_to_date(file.as_fd(), position, end - position),
            false => page_cache::present(file.as_fd(), position, end - position),
        };
        probe.ok().is_none_or(|r| r.is_whole())
    }
}

/// Writes `parts` in order to `writer`, whose socket descriptor is `socket`; the connection
/// that owns both keeps the socket open for the whole call, and its `probe` across calls.
pub async fn write_parts<W: AsyncWrite + Unpin>(
    writer: &mut W,
    socket: RawFd,
    parts: Vec<Part>,
    probe: &mut Probe,
) -> std::io::Result<Sent> {
    // SAFETY: the caller owns the open socket for the duration of this call (see above).
    let socket = unsafe { BorrowedFd::borrow_raw(socket) };
    let mut sent = Sent::default();
    for part in parts {
        match part {
            Part::Memory(bytes) => writer.write_all(&bytes).await?,
            Part::File(slice) => send_file(writer, socket, &slice, probe, &mut sent).await?,
        }
    }
    // File bytes went out and none was cold: back to the cheap probe.
    if sent.cold_chunks == 0 && sent.zero_copy + sent.copied > 0 {
        probe.exact = false;
    }
    Ok(sent)
}

/// Sends `slice` chunk by chunk, each the way its residency in the page cache calls for.
async fn send_file<W: AsyncWrite + Unpin>(
    writer: &mut W,
    socket: BorrowedFd<'_>,
    slice: &FileSlice,
    probe: &mut Probe,
    sent: &mut Sent,
) -> std::io::Result<()> {
    let end = slice.position + slice.len as u64;
    // The usual case, a range wholly cached, goes with as few sendfile calls as the socket
    // takes (each stops when it is full), not one per chunk.
    if !probe.exact && probe.cached(&slice.file, slice.position, end, sent) {
        send_cached(writer, socket, &slice.file, slice.position, end, sent).await?;
        glommio::yield_if_needed().await;
        return Ok(());
    }
    let mut position = slice.position;
    // The slice's descriptor as io_uring reads it, made at its first cold chunk.
    let mut ring: Option<RingFile> = None;
    while position < end {
        let chunk_end = end.min(position + CHUNK_BYTES);
        if probe.cached(&slice.file, position, chunk_end, sent) {
            send_cached(writer, socket, &slice.file, position, chunk_end, sent).await?;
        } else {
            probe.exact = true;
            if ring.is_none() {
                ring = Some(RingFile::new(&slice.file)?);
            }
            send_cold(writer, ring.as_ref().expect("made above"), position, chunk_end, sent).await?;
        }
        position = chunk_end;
        glommio::yield_if_needed().await;
    }
    Ok(())
}

/// Sends `position..end` of `file`, which is in the page cache, with sendfile.
async fn send_cached<W: AsyncWrite + Unpin>(
    writer: &mut W,
    socket: BorrowedFd<'_>,
    file: &File,
    mut position: u64,
    end: u64,
    sent: &mut Sent,
) -> std::io::Result<()> {
    while position < end {
        let mut offset = position as i64;
        let left = (end - position) as usize;
        match nix::sys::sendfile::sendfile64(socket, file.as_fd(), Some(&mut offset), left) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                position += n as u64;
                sent.zero_copy += n as u64;
            }
            Err(nix::errno::Errno::EAGAIN) => {
                // The socket is full: send a chunk the ordinary way, which waits for room. The
                // range was cached when probed, so this read does not wait for the disk.
                let mut chunk = vec![0u8; left.min(FALLBACK_CHUNK_BYTES)];
                file.read_exact_at(&mut chunk, position)?;
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

/// Sends `position..end` of `file`, not all in the page cache, by reading it through the
/// shard's io_uring: the shard serves other connections until the disk has answered.
async fn send_cold<W: AsyncWrite + Unpin>(
    writer: &mut W,
    file: &RingFile,
    mut position: u64,
    end: u64,
    sent: &mut Sent,
) -> std::io::Result<()> {
    while position < end {
        let read = file.read_at(position, (end - position) as usize).await?;
        if read.is_empty() {
            // A fetched range lies within the file's whole batches, which are never cut off:
            // the file was damaged under us.
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        writer.write_all(&read).await?;
        position += read.len() as u64;
        sent.io_uring += read.len() as u64;
    }
    sent.cold_chunks += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use futures::AsyncReadExt;
    use glommio::net::{TcpListener, TcpStream};

    use super::*;

    const PAGE: usize = 4096;

    /// A synced file of distinct bytes, written a page at a time (a large write would be cached
    /// as one large folio, which the kernel only evicts whole), then evicted from the page cache.
    fn evicted_file(dir: &std::path::Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.join("segment");
        let mut file = File::create(&path).unwrap();
        for page in content.chunks(PAGE) {
            file.write_all(page).unwrap();
        }
        page_cache::evict(&file, 0, 0);
        (path, content)
    }

    /// Sends `parts` over a loopback connection made as the broker makes them; returns what
    /// arrived and the counts.
    async fn send(parts: Vec<Part>, probe: &mut Probe) -> (Vec<u8>, Sent) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let receiving = glommio::spawn_local(async move {
            let mut stream = listener.accept().await.unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.unwrap();
            received
        });
        let mut stream = TcpStream::connect(address).await.unwrap();
        make_nonblocking(&stream).unwrap();
        let socket = stream.as_raw_fd();
        let sent = write_parts(&mut stream, socket, parts, probe).await.unwrap();
        stream.close().await.unwrap();
        (receiving.await, sent)
    }

    #[test]
    fn a_range_of_cached_and_cold_chunks_arrives_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content) = evicted_file(dir.path(), 5 * CHUNK_BYTES as usize);
        // A range starting mid-page; its second chunk is read back into the cache, its first
        // stays cold.
        let (position, len) = (1000u64, 4 * CHUNK_BYTES as usize + 333);
        let mut warm = vec![0u8; CHUNK_BYTES as usize];
        File::open(&path).unwrap().read_exact_at(&mut warm, position + CHUNK_BYTES).unwrap();
        let expected: Vec<u8> = [b"head".as_slice(), &content[position as usize..position as usize + len]].concat();
        let slice = || FileSlice { file: File::open(&path).unwrap(), position, len };

        glommio::LocalExecutor::default().run(async {
            let mut probe = Probe::default();
            let (received, sent) =
                send(vec![Part::Memory(Bytes::from_static(b"head")), Part::File(slice())], &mut probe).await;
            assert!(received == expected, "the bytes of the range, in order");
            assert!(sent.cold_chunks >= 1, "the first chunk was cold: {sent:?}");
            assert!(sent.zero_copy + sent.copied >= CHUNK_BYTES, "the cached chunk went with sendfile: {sent:?}");
            assert_eq!(sent.zero_copy + sent.copied + sent.io_uring, len as u64);
            assert!(probe.exact, "having met a cold chunk, the connection probes exactly");
            assert_eq!(sent.probes, 1 + 5, "the whole range, then each of its five chunks: {sent:?}");

            // Every page is cached now: all goes with sendfile, and the cheap probe is back.
            let (received, sent) =
                send(vec![Part::Memory(Bytes::from_static(b"head")), Part::File(slice())], &mut probe).await;
            assert!(received == expected);
            assert_eq!(sent.cold_chunks, 0, "{sent:?}");
            assert!(!probe.exact);

            // Still cached, and probed cheaply again: the range goes whole, after one probe.
            let (received, sent) = send(vec![Part::File(slice())], &mut probe).await;
            assert!(received == expected[4..]);
            assert_eq!(sent.probes, 1, "one probe for the whole cached range: {sent:?}");
            assert_eq!(sent.zero_copy + sent.copied, len as u64);
        });
    }
}
