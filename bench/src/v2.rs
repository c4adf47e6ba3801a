//! A load generator for any Open Inference Protocol (V2) server: gRPC
//! `ModelInfer`, REST with JSON tensors, and REST with Triton's binary tensor
//! data extension, the way `tritonclient.http` sends by default.
//!
//! The inputs are the target model's own (its metadata) unless given as
//! `NAME:DATATYPE:WIDTH`. Values are made up by type: INT64 a row number in
//! the first column, BYTES the given strings in turn, other numbers and BOOL 0
//! and 1 in turn. gRPC sends them as `raw_input_contents`, as `tritonclient`
//! does; REST binary sends the same bytes after the JSON header.

use std::str::FromStr;

use anyhow::{Context, bail};
use bytes::Bytes;
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crs_proto::inference::{ModelInferRequest, ModelMetadataRequest};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::load::Caller;

/// The binary tensor data extension's header: the length of the JSON part of the body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// One V2 input: its name, datatype and elements per row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub datatype: String,
    pub width: usize,
}

impl FromStr for InputSpec {
    type Err = String;

    /// `NAME:DATATYPE:WIDTH`, WIDTH 1 for shape `[N]`, more for `[N, WIDTH]`.
    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [name, datatype, width] = parts.as_slice() else {
            return Err(format!("{text:?} is not NAME:DATATYPE:WIDTH"));
        };
        let width: usize = width.parse().map_err(|_| format!("{text:?}: WIDTH must be a positive number"))?;
        if width == 0 || element_bytes(datatype).is_none() && *datatype != "BYTES" {
            return Err(format!("{text:?}: unsupported datatype or zero width"));
        }
        Ok(InputSpec { name: (*name).to_owned(), datatype: (*datatype).to_owned(), width })
    }
}

impl InputSpec {
    /// The spec of an input as a server's metadata describes it.
    fn from_metadata(name: &str, datatype: &str, shape: &[i64]) -> anyhow::Result<Self> {
        let width = match shape {
            [_] => 1,
            [_, width] if *width > 0 => *width as usize,
            other => bail!("input {name}: shape {other:?} is not [N] or [N, k]; give the inputs by hand"),
        };
        Ok(InputSpec { name: name.to_owned(), datatype: datatype.to_owned(), width })
    }

    fn shape(&self, rows: usize) -> Vec<i64> {
        if self.width == 1 { vec![rows as i64] } else { vec![rows as i64, self.width as i64] }
    }

    fn cells(&self, rows: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..rows).flat_map(move |row| (0..self.width).map(move |column| (row, column)))
    }
}

/// Bytes per element of a fixed-size V2 datatype.
fn element_bytes(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// The made-up value of row `row`, column `column`: a row number, one of the
/// `bytes_values` or a 0/1 bit.
enum Cell<'a> {
    Number(u64),
    Bit(bool),
    Text(&'a str),
}

fn cell<'a>(datatype: &str, row: usize, column: usize, bytes_values: &'a [String]) -> Cell<'a> {
    match datatype {
        "BYTES" => Cell::Text(&bytes_values[(row + column) % bytes_values.len()]),
        "INT64" | "UINT64" if column == 0 => Cell::Number(row as u64),
        _ => Cell::Bit((row + column) % 2 == 1),
    }
}

/// One element, little-endian, as raw tensor contents hold it.
fn raw_element(datatype: &str, cell: Cell<'_>) -> Vec<u8> {
    match cell {
        Cell::Text(text) => [(text.len() as u32).to_le_bytes().as_slice(), text.as_bytes()].concat(),
        Cell::Number(n) => n.to_le_bytes().to_vec(),
        Cell::Bit(bit) => {
            let one = f64::from(u8::from(bit));
            match datatype {
                "FP32" => (one as f32).to_le_bytes().to_vec(),
                "FP64" => one.to_le_bytes().to_vec(),
                // FP16 1.0 is 0x3c00, BF16 1.0 is 0x3f80.
                "FP16" => [0, if bit { 0x3c } else { 0 }].to_vec(),
                "BF16" => [if bit { 0x80 } else { 0 }, if bit { 0x3f } else { 0 }].to_vec(),
                other => {
                    let mut out = vec![0u8; element_bytes(other).unwrap_or(1)];
                    out[0] = u8::from(bit);
                    out
                }
            }
        }
    }
}

/// One element as a JSON tensor's `data` holds it.
fn json_element(datatype: &str, cell: Cell<'_>) -> Value {
    match cell {
        Cell::Text(text) => json!(text),
        Cell::Number(n) => json!(n),
        Cell::Bit(bit) => match datatype {
            "BOOL" => json!(bit),
            "FP16" | "BF16" | "FP32" | "FP64" => json!(f64::from(u8::from(bit))),
            _ => json!(u8::from(bit)),
        },
    }
}

/// How requests travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    RestJson,
    RestBinary,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "gRPC",
            Protocol::RestJson => "REST JSON",
            Protocol::RestBinary => "REST binary",
        }
    }
}

/// A V2 server and the model to call on it.
#[derive(Clone, Debug)]
pub struct Target {
    pub protocol: Protocol,
    /// gRPC: `host:port`; REST: the base URL, `http://host:port[/prefix]`.
    pub address: String,
    pub model: String,
    /// Empty lets the server choose.
    pub version: String,
    /// The output to ask for; `None`: every output.
    pub output: Option<String>,
    /// Empty: the model's own, from its metadata ([`Target::resolve_inputs`]).
    pub inputs: Vec<InputSpec>,
    /// Values of BYTES inputs, used in turn.
    pub bytes_values: Vec<String>,
}

impl Target {
    /// The model's path under the base URL: `/v2/models/{m}[/versions/{v}]`.
    fn model_path(&self, base: &BaseUrl) -> String {
        let mut path = format!("{}/v2/models/{}", base.prefix, self.model);
        if !self.version.is_empty() {
            path.push_str(&format!("/versions/{}", self.version));
        }
        path
    }

    /// Fills in the inputs from the model's metadata unless they were given.
    pub async fn resolve_inputs(&mut self) -> anyhow::Result<()> {
        if !self.inputs.is_empty() {
            return Ok(());
        }
        self.inputs = match self.protocol {
            Protocol::Grpc => {
                let request = ModelMetadataRequest { name: self.model.clone(), version: self.version.clone() };
                let mut client = GrpcInferenceServiceClient::new(crate::connect(&self.address).await?);
                let metadata = client.model_metadata(request).await?.into_inner();
                metadata
                    .inputs
                    .iter()
                    .map(|input| InputSpec::from_metadata(&input.name, &input.datatype, &input.shape))
                    .collect::<anyhow::Result<_>>()?
            }
            Protocol::RestJson | Protocol::RestBinary => {
                #[derive(Deserialize)]
                struct Metadata {
                    inputs: Vec<TensorMetadata>,
                }
                #[derive(Deserialize)]
                struct TensorMetadata {
                    name: String,
                    datatype: String,
                    shape: Vec<i64>,
                }
                let base = BaseUrl::parse(&self.address)?;
                let mut connection = HttpConnection::open(&base.authority).await?;
                let path = self.model_path(&base);
                let answer = connection.send(base.request(Method::GET, &path, Full::default())?).await?;
                let body = answer.ok(&path)?;
                let metadata: Metadata =
                    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not V2 model metadata"))?;
                metadata
                    .inputs
                    .iter()
                    .map(|input| InputSpec::from_metadata(&input.name, &input.datatype, &input.shape))
                    .collect::<anyhow::Result<_>>()?
            }
        };
        if self.inputs.is_empty() {
            bail!("model {:?} at {} lists no inputs; give them by hand", self.model, self.address);
        }
        Ok(())
    }

    /// Reads the inputs (see [`Target::resolve_inputs`]) and sends one one-row
    /// request: whether the target takes what this load generator sends.
    pub async fn probe(&mut self) -> anyhow::Result<()> {
        self.resolve_inputs().await?;
        self.caller(1, None).await?.call().await
    }

    /// A raw-tensor ModelInfer request of `rows` rows.
    pub fn grpc_request(&self, rows: usize) -> ModelInferRequest {
        let mut request = ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.version.clone(),
            outputs: self
                .output
                .iter()
                .map(|name| InferRequestedOutputTensor { name: name.clone(), ..Default::default() })
                .collect(),
            ..Default::default()
        };
        for input in &self.inputs {
            request.inputs.push(InferInputTensor {
                name: input.name.clone(),
                datatype: input.datatype.clone(),
                shape: input.shape(rows),
                ..Default::default()
            });
            request.raw_input_contents.push(self.raw_contents(input, rows));
        }
        request
    }

    fn raw_contents(&self, input: &InputSpec, rows: usize) -> Vec<u8> {
        input
            .cells(rows)
            .flat_map(|(row, column)| {
                raw_element(&input.datatype, cell(&input.datatype, row, column, &self.bytes_values))
            })
            .collect()
    }

    /// The REST request of `rows` rows, JSON or binary by the protocol.
    pub fn rest_request(&self, rows: usize) -> anyhow::Result<RestRequest> {
        let base = BaseUrl::parse(&self.address)?;
        let binary = self.protocol == Protocol::RestBinary;
        let inputs: Vec<Value> = self
            .inputs
            .iter()
            .map(|input| {
                let mut tensor = json!({"name": input.name, "shape": input.shape(rows), "datatype": input.datatype});
                if binary {
                    tensor["parameters"] = json!({"binary_data_size": self.raw_contents(input, rows).len()});
                } else {
                    let data: Vec<Value> = input
                        .cells(rows)
                        .map(|(row, column)| {
                            json_element(&input.datatype, cell(&input.datatype, row, column, &self.bytes_values))
                        })
                        .collect();
                    tensor["data"] = Value::Array(data);
                }
                tensor
            })
            .collect();
        let mut header = json!({"inputs": inputs});
        // As tritonclient.http: binary answers asked for per output, or for all when none is named.
        match (&self.output, binary) {
            (Some(name), true) => header["outputs"] = json!([{"name": name, "parameters": {"binary_data": true}}]),
            (Some(name), false) => header["outputs"] = json!([{"name": name}]),
            (None, true) => header["parameters"] = json!({"binary_data_output": true}),
            (None, false) => {}
        }
        let mut body = serde_json::to_vec(&header)?;
        let header_length = body.len();
        if binary {
            for input in &self.inputs {
                body.extend(self.raw_contents(input, rows));
            }
        }
        let uri: Uri = format!("{}/infer", self.model_path(&base)).parse()?;
        Ok(RestRequest {
            authority: base.authority,
            uri,
            // tritonclient.http sends binary bodies without a content type.
            content_type: (!binary).then(|| HeaderValue::from_static("application/json")),
            header_length: binary.then_some(header_length),
            body: Bytes::from(body),
        })
    }

    /// A caller sending `rows`-row requests: over `channel` for gRPC (callers may
    /// share it), over a connection of its own for REST.
    pub async fn caller(&self, rows: usize, channel: Option<&Channel>) -> anyhow::Result<V2Caller> {
        Ok(match self.protocol {
            Protocol::Grpc => {
                let channel = match channel {
                    Some(channel) => channel.clone(),
                    None => crate::connect(&self.address).await?,
                };
                V2Caller::Grpc {
                    client: GrpcInferenceServiceClient::new(channel),
                    request: self.grpc_request(rows),
                    rows,
                }
            }
            Protocol::RestJson | Protocol::RestBinary => {
                let request = self.rest_request(rows)?;
                let connection = HttpConnection::open(&request.authority).await?;
                V2Caller::Rest { connection, request, rows }
            }
        })
    }
}

/// `http://host:port[/prefix]`, split.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    pub authority: String,
    /// The path before `/v2`, without a trailing `/`; usually empty.
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("{url}: only http:// is supported, not {other}://"),
            None => bail!("{url}: give the scheme, http://host:port"),
        }
        let authority = uri.authority().with_context(|| format!("{url}: no host"))?;
        let authority = match authority.port() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        Ok(BaseUrl { authority, prefix: uri.path().trim_end_matches('/').to_owned() })
    }

    pub fn request(&self, method: Method, path: &str, body: Full<Bytes>) -> anyhow::Result<Request<Full<Bytes>>> {
        Ok(Request::builder().method(method).uri(path).header(HOST, &self.authority).body(body)?)
    }
}

/// An infer request as sent, built once and sent many times.
#[derive(Clone, Debug)]
pub struct RestRequest {
    authority: String,
    uri: Uri,
    content_type: Option<HeaderValue>,
    /// Binary requests: the length of the JSON header at the start of the body.
    header_length: Option<usize>,
    body: Bytes,
}

impl RestRequest {
    fn to_request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::post(self.uri.clone()).header(HOST, &self.authority);
        if let Some(content_type) = &self.content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        if let Some(length) = self.header_length {
            builder = builder.header(HEADER_LENGTH, length);
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// One HTTP/1.1 keep-alive connection, one request at a time.
#[derive(Debug)]
pub struct HttpConnection {
    sender: SendRequest<Full<Bytes>>,
}

/// An HTTP answer, its body read whole.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpAnswer {
    /// The body of a 200 answer; any other status is an error showing the start of the body.
    pub fn ok(self, what: &str) -> anyhow::Result<Bytes> {
        if self.status != StatusCode::OK {
            let text = String::from_utf8_lossy(&self.body);
            let start: String = text.chars().take(300).collect();
            bail!("{what}: HTTP {}: {start}", self.status);
        }
        Ok(self.body)
    }
}

impl HttpConnection {
    pub async fn open(authority: &str) -> anyhow::Result<Self> {
        let stream =
            tokio::net::TcpStream::connect(authority).await.with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Drives the connection until the sender is dropped or the server closes it.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(HttpConnection { sender })
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<HttpAnswer> {
        self.sender.ready().await.context("HTTP connection closed")?;
        let (parts, body) = self.sender.send_request(request).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(HttpAnswer { status: parts.status, headers: parts.headers, body })
    }
}

/// The part of an infer answer the callers check: each output's shape.
#[derive(Deserialize)]
struct InferAnswer {
    outputs: Vec<OutputHeader>,
}

#[derive(Deserialize)]
struct OutputHeader {
    shape: Vec<i64>,
}

/// Checks that the answer has an output of `rows` rows.
fn check_rows(first_shape: Option<&[i64]>, rows: usize) -> anyhow::Result<()> {
    match first_shape {
        None => bail!("no outputs in the answer"),
        Some(shape) if shape.first() != Some(&(rows as i64)) => {
            bail!("the answer's first output has shape {shape:?} for {rows} rows")
        }
        Some(_) => Ok(()),
    }
}

/// A caller of one target.
#[derive(Debug)]
pub enum V2Caller {
    Grpc { client: GrpcInferenceServiceClient<Channel>, request: ModelInferRequest, rows: usize },
    Rest { connection: HttpConnection, request: RestRequest, rows: usize },
}

impl Caller for V2Caller {
    async fn call(&mut self) -> anyhow::Result<()> {
        match self {
            V2Caller::Grpc { client, request, rows } => {
                let answer = client.model_infer(request.clone()).await?.into_inner();
                check_rows(answer.outputs.first().map(|o| o.shape.as_slice()), *rows)
            }
            V2Caller::Rest { connection, request, rows } => {
                let answer = connection.send(request.to_request()?).await?;
                let header_length = match answer.headers.get(HEADER_LENGTH) {
                    Some(value) => Some(value.to_str()?.parse::<usize>()?),
                    None => None,
                };
                let body = answer.ok("infer")?;
                let header = match header_length {
                    Some(length) => body.get(..length).context("the answer is shorter than its JSON header")?,
                    None => &body,
                };
                let answer: InferAnswer = serde_json::from_slice(header).context("not a V2 infer answer")?;
                check_rows(answer.outputs.first().map(|o| o.shape.as_slice()), *rows)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(protocol: Protocol) -> Target {
        Target {
            protocol,
            address: "http://127.0.0.1:8080/prefix/".into(),
            model: "m".into(),
            version: "3".into(),
            output: None,
            inputs: vec!["id:INT64:1".parse().unwrap(), "x:FP32:2".parse().unwrap(), "s:BYTES:1".parse().unwrap()],
            bytes_values: vec!["ab".into(), "c".into()],
        }
    }

    #[test]
    fn json_requests_carry_every_value_as_json() {
        let request = target(Protocol::RestJson).rest_request(2).unwrap();
        assert_eq!(request.uri, "/prefix/v2/models/m/versions/3/infer");
        assert_eq!(request.header_length, None);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"inputs": [
                {"name": "id", "shape": [2], "datatype": "INT64", "data": [0, 1]},
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [0.0, 1.0, 1.0, 0.0]},
                {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["ab", "c"]},
            ]})
        );
    }

    #[test]
    fn binary_requests_follow_the_json_header_with_the_raw_contents() {
        let t = target(Protocol::RestBinary);
        let request = t.rest_request(2).unwrap();
        let length = request.header_length.unwrap();
        let header: Value = serde_json::from_slice(&request.body[..length]).unwrap();
        assert_eq!(header["parameters"], json!({"binary_data_output": true}));
        let sizes: Vec<&Value> = header["inputs"].as_array().unwrap().iter().map(|i| &i["parameters"]).collect();
        assert_eq!(
            sizes,
            [&json!({"binary_data_size": 16}), &json!({"binary_data_size": 16}), &json!({"binary_data_size": 11})]
        );
        let raw = t.grpc_request(2).raw_input_contents.concat();
        assert_eq!(&request.body[length..], raw.as_slice());
        assert_eq!(&raw[16..24], [0.0f32.to_le_bytes(), 1.0f32.to_le_bytes()].concat());
        assert_eq!(&raw[32..], b"\x02\0\0\0ab\x01\0\0\0c");
    }

    #[test]
    fn base_urls_need_http_and_a_host() {
        let base = BaseUrl::parse("http://localhost/").unwrap();
        assert_eq!((base.authority.as_str(), base.prefix.as_str()), ("localhost:80", ""));
        assert!(BaseUrl::parse("https://localhost:8443").is_err());
        assert!(BaseUrl::parse("localhost:8080").is_err());
    }
}
