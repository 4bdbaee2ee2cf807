//! A Kafka connection on the thread-per-core runtime (the bench's load generator, a follower's
//! fetcher): pipelined, split into a request writer and a response reader so that a sender can
//! keep several requests in flight while another task reads the answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use anyhow::Context;
use bytes::BytesMut;
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::protocol::frame::{decode_response, encode_request_into, read_frame};
use crate::runtime::TcpStream;

/// Fetch responses are bounded by the request's max bytes; this only refuses nonsense.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// Writes requests at the highest version both sides serve.
pub struct RequestWriter {
    writer: WriteHalf<TcpStream>,
    client_id: &'static str,
    versions: Rc<HashMap<i16, i16>>,
    correlation_id: i32,
    frame: BytesMut,
}

/// Reads responses in the order their requests were written, as Kafka sends them.
pub struct ResponseReader {
    reader: ReadHalf<TcpStream>,
}

/// A request written and not yet answered: what its reader needs to decode the answer.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub correlation_id: i32,
    pub version: i16,
}

/// Connects to `address` as `client_id` and negotiates versions (ApiVersions v3, falling back
/// to v0).
pub async fn connect(address: SocketAddr, client_id: &'static str) -> anyhow::Result<(RequestWriter, ResponseReader)> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(std::io::Error::from)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    let (reader, writer) = stream.split();
    let mut writer = RequestWriter {
        writer,
        client_id,
        versions: Rc::new(HashMap::new()),
        correlation_id: 0,
        frame: BytesMut::new(),
    };
    let mut reader = ResponseReader { reader };

    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(client_id))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let sent = writer.write_at(&request, 3).await?;
    let mut response: ApiVersionsResponse = reader.read::<ApiVersionsRequest>(sent).await?;
    if response.error_code == ResponseError::UnsupportedVersion.code() {
        let sent = writer.write_at(&request, 0).await?;
        response = reader.read::<ApiVersionsRequest>(sent).await?;
    }
    crate::client::check(response.error_code, "ApiVersions")?;
    let versions = crate::client::common_versions(response);
    writer.versions = Rc::new(versions);
    Ok((writer, reader))
}

impl RequestWriter {
    /// The version `R` goes out at.
    pub fn version<R: Request>(&self) -> anyhow::Result<i16> {
        self.versions.get(&R::KEY).copied().with_context(|| format!("the broker does not serve API key {}", R::KEY))
    }

    pub async fn write<R: Request>(&mut self, request: &R) -> anyhow::Result<Sent> {
        let version = self.version::<R>()?;
        self.write_at(request, version).await
    }

    async fn write_at<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<Sent> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        encode_request_into(&mut self.frame, request, version, self.correlation_id, self.client_id)?;
        self.writer.write_all(&self.frame).await.context("sending a request")?;
        Ok(Sent { correlation_id: self.correlation_id, version })
    }
}

impl ResponseReader {
    /// Reads the response to `sent`, which must be the oldest request still unanswered.
    pub async fn read<R: Request>(&mut self, sent: Sent) -> anyhow::Result<R::Response> {
        let body = read_frame(&mut self.reader, MAX_RESPONSE_BYTES).await.context("reading a response")?;
        decode_response::<R>(body, sent.version, sent.correlation_id)
    }
}
