//! The compression codecs of Kafka v2 batches (attributes bits 0-2): bounded, streaming
//! decompression of a batch's records, and compression of records the broker re-encodes
//! (compaction).
//!
//! Invariant: decompression never yields more than the `limit` it is given, and never
//! allocates in proportion to what a payload merely claims: gzip, lz4 and zstd stream
//! through fixed buffers (zstd's window is capped by libzstd's default, 128 MiB of address
//! space, touched only as output is produced); a snappy block is decompressed whole, so its
//! claimed length is checked against the limit and against snappy's largest possible
//! expansion first.

use std::io::{self, BufRead, BufReader, Read, Write};

use super::StorageError;

/// Attribute bits naming the codec.
const CODEC_MASK: i16 = 0x07;
/// snappy-java's stream header (magic, version 1, compatible version 1), which Kafka's
/// producers write before length-prefixed raw snappy blocks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// snappy-java's block size; blocks we write are at most this long uncompressed.
const XERIAL_BLOCK: usize = 32 * 1024;
/// Raw snappy turns a 3-byte copy element into at most 64 bytes, its best ratio: a block
/// claiming more than this many times its size is corrupt.
const SNAPPY_MAX_EXPANSION: usize = 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec a batch's attributes name; ids 5-7 are not Kafka codecs.
    pub fn from_attributes(attributes: i16) -> Result<Codec, StorageError> {
        match attributes & CODEC_MASK {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            id => Err(StorageError::UnsupportedCompression(id)),
        }
    }

    /// Reads the decompressed form of `payload` (a batch's bytes after its header), failing
    /// with [`StorageError::DecompressedTooLarge`] once more than `limit` bytes come out.
    /// Errors of the codec itself are [`StorageError::CorruptBatch`].
    pub fn decompress<'a>(self, payload: &'a [u8], limit: usize) -> Result<Decompressed<'a>, StorageError> {
        let corrupt = |e: io::Error| StorageError::CorruptBatch(format!("undecodable {self:?} payload: {e}"));
        let inner: Box<dyn Read + 'a> = match self {
            Codec::None => Box::new(payload),
            Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(payload)),
            Codec::Snappy => Box::new(Snappy::new(payload, limit)),
            Codec::Lz4 => Box::new(lz4::Decoder::new(payload).map_err(corrupt)?),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(payload).map_err(corrupt)?),
        };
        Ok(Decompressed {
            inner: BufReader::with_capacity(64 * 1024, Bounded { inner, left: limit, limit }),
            codec: self,
        })
    }

    /// `records` compressed as a batch payload.
    pub fn compress(self, records: &[u8]) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::with_capacity(records.len() / 2 + 64);
        match self {
            Codec::None => out.extend_from_slice(records),
            Codec::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
                encoder.write_all(records)?;
                encoder.finish()?;
            }
            Codec::Snappy => {
                out.extend_from_slice(XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let mut encoder = snap::raw::Encoder::new();
                for block in records.chunks(XERIAL_BLOCK) {
                    let compressed = encoder
                        .compress_vec(block)
                        .map_err(|e| StorageError::CorruptBatch(format!("snappy compression failed: {e}")))?;
                    out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                    out.extend_from_slice(&compressed);
                }
            }
            Codec::Lz4 => {
                let mut encoder = lz4::EncoderBuilder::new().block_mode(lz4::BlockMode::Independent).build(&mut out)?;
                encoder.write_all(records)?;
                encoder.finish().1?;
            }
            Codec::Zstd => out = zstd::stream::encode_all(records, 0)?,
        }
        Ok(out)
    }
}

/// The decompressed records of one batch, read through a 64 KiB buffer.
pub struct Decompressed<'a> {
    inner: BufReader<Bounded<Box<dyn Read + 'a>>>,
    codec: Codec,
}

impl Decompressed<'_> {
    /// Reads up to `length` bytes into `out` (appended); fewer means the records ended.
    pub fn read_up_to(&mut self, length: u64, out: &mut Vec<u8>) -> Result<usize, StorageError> {
        (&mut self.inner).take(length).read_to_end(out).map_err(|e| self.error(e))
    }

    /// The next byte; `None` at the end.
    pub fn read_byte(&mut self) -> Result<Option<u8>, StorageError> {
        let byte = match self.inner.fill_buf() {
            Ok(rest) => rest.first().copied(),
            Err(e) => return Err(self.error(e)),
        };
        if byte.is_some() {
            self.inner.consume(1);
        }
        Ok(byte)
    }

    /// Reads to the end, to learn whether the payload itself is corrupt.
    pub fn drain(&mut self) -> Result<(), StorageError> {
        io::copy(&mut self.inner, &mut io::sink()).map(drop).map_err(|e| self.error(e))
    }

    /// Whether nothing is left.
    pub fn at_end(&mut self) -> Result<bool, StorageError> {
        match self.inner.fill_buf() {
            Ok(rest) => Ok(rest.is_empty()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: io::Error) -> StorageError {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<TooLarge>()) {
            Some(TooLarge(limit)) => StorageError::DecompressedTooLarge { limit: *limit },
            None => StorageError::CorruptBatch(format!("undecodable {:?} payload: {e}", self.codec)),
        }
    }
}

/// A decompressed payload went past its limit.
#[derive(Debug)]
struct TooLarge(usize);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompresses to more than {} bytes", self.0)
    }
}

impl std::error::Error for TooLarge {}

fn too_large(limit: usize) -> io::Error {
    io::Error::other(TooLarge(limit))
}

/// Passes on at most `left` bytes of `inner`; asking for more than that fails, unless
/// `inner` has ended.
struct Bounded<R> {
    inner: R,
    left: usize,
    limit: usize,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(too_large(self.limit)),
            };
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n;
        Ok(n)
    }
}

/// Kafka's snappy: snappy-java's framing (a header, then blocks each prefixed by its
/// compressed length) or, without the header, one raw snappy block.
struct Snappy<'a> {
    input: &'a [u8],
    limit: usize,
    produced: usize,
    block: Vec<u8>,
    at: usize,
    started: bool,
    framed: bool,
}

impl<'a> Snappy<'a> {
    fn new(input: &'a [u8], limit: usize) -> Snappy<'a> {
        Snappy { input, limit, produced: 0, block: Vec::new(), at: 0, started: false, framed: false }
    }

    /// Decompresses the next block into `self.block`; false at the end of the input.
    fn next_block(&mut self) -> io::Result<bool> {
        if !self.started {
            self.started = true;
            self.framed = self.input.len() >= XERIAL_HEADER_LEN && self.input.starts_with(XERIAL_MAGIC);
            if self.framed {
                self.input = &self.input[XERIAL_HEADER_LEN..];
            } else {
                if self.input.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "empty snappy payload"));
                }
                let raw = std::mem::take(&mut self.input);
                self.decompress_block(raw)?;
                return Ok(true);
            }
        }
        if self.input.is_empty() || !self.framed {
            return Ok(false);
        }
        if self.input.len() < 4 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated snappy block length"));
        }
        let length = u32::from_be_bytes(self.input[..4].try_into().expect("4 bytes")) as usize;
        let rest = &self.input[4..];
        if length > rest.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "snappy block longer than the payload"));
        }
        self.input = &rest[length..];
        self.decompress_block(&rest[..length])?;
        Ok(true)
    }

    fn decompress_block(&mut self, compressed: &[u8]) -> io::Result<()> {
        let length =
            snap::raw::decompress_len(compressed).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if length > compressed.len().saturating_mul(SNAPPY_MAX_EXPANSION).saturating_add(64) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "snappy block claims an impossible length"));
        }
        if self.produced.saturating_add(length) > self.limit {
            return Err(too_large(self.limit));
        }
        self.block.resize(length, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.produced += length;
        self.at = 0;
        Ok(())
    }
}

impl Read for Snappy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
