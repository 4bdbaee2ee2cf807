//! Size-prefixed frames: `i32` big-endian length, then that many bytes.

use anyhow::bail;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Why a connection's frame could not be read; each closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the connection")]
    Closed,
    #[error("frame size {0} is negative or zero")]
    InvalidSize(i32),
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame body whole, allocated at once: for a client reading the answers to its own
/// requests. (The broker reads requests as their bytes arrive: `server::connection`.)
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Bytes, FrameError> {
    let size = read_frame_size(reader, max).await?;
    let mut body = BytesMut::zeroed(size);
    reader.read_exact(&mut body).await?;
    Ok(body.freeze())
}

/// Reads a frame's size prefix and checks it: positive, at most `max`.
pub async fn read_frame_size<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<usize, FrameError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size);
    if size <= 0 {
        return Err(FrameError::InvalidSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}

/// Encodes a whole response frame: size, header, body.
pub fn encode_response<M: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &M,
    version: i16,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    encode_response_into(&mut buf, correlation_id, header_version, body, version)?;
    Ok(buf.freeze())
}

/// Encodes a whole response frame into `buf` (which may keep parts of it out of memory).
pub fn encode_response_into<B: ByteBufMut, M>(
    buf: &mut B,
    correlation_id: i32,
    header_version: i16,
    body: &M,
    version: i16,
) -> anyhow::Result<()>
where
    M: Encodable,
{
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let start = buf.offset();
    buf.put_i32(i32::try_from(size)?);
    header.encode(buf, header_version)?;
    body.encode(buf, version)?;
    debug_assert_eq!(buf.offset() - start, 4 + size);
    Ok(())
}

/// Encodes a whole request frame into `buf` (which it clears first): size, header, body.
pub fn encode_request_into<R: Request>(
    buf: &mut BytesMut,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> anyhow::Result<()> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version)? + request.compute_size(version)?;
    buf.clear();
    buf.reserve(4 + size);
    buf.put_i32(i32::try_from(size)?);
    header.encode(buf, header_version)?;
    request.encode(buf, version)?;
    Ok(())
}

/// Decodes the body of a response frame to `request`'s answer, checking that it answers
/// `correlation_id` and that nothing is left over.
pub fn decode_response<R: Request>(mut body: Bytes, version: i16, correlation_id: i32) -> anyhow::Result<R::Response> {
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
    if header.correlation_id != correlation_id {
        bail!("response correlation id {} does not match request {correlation_id}", header.correlation_id);
    }
    let response = R::Response::decode(&mut body, version)?;
    if body.has_remaining() {
        bail!("{} bytes left after the response", body.remaining());
    }
    Ok(response)
}
