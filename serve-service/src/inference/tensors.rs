//! Open Inference Protocol tensors to keyword rows and rates back: the fixed
//! tensor layout of every model version, the same over gRPC and REST.
//!
//! Inputs: `entity_id` INT64 `[N]`, `device` BYTES `[N]` (Computer, Smartphone or
//! Tablet) and `attributes` INT8 `[N, k]`, whose columns are the attributes the
//! model uses in the order `ModelMetadata` lists them. Output: `cr` FP64 `[N]`.
//!
//! A tensor's elements come as gRPC's typed contents, as little-endian bytes
//! (gRPC's `raw_input_contents`, REST's binary tensor data extension) or as a
//! JSON tensor's `data`; [`decode`] reads and checks all three, so a problem
//! is named the same way (the tensor, the row, the column) whatever carried it.

use std::sync::Arc;

use crs_domain::data::{KeywordRows, RowProblem};
use crs_proto::inference::model_infer_response::InferOutputTensor;
use crs_proto::inference::model_metadata_response::TensorMetadata;
use crs_proto::inference::{InferParameter, InferTensorContents, ModelInferRequest, infer_parameter};

use super::json_data::{JsonData, JsonElement};
use crate::status::ServeError;

pub const ENTITY_ID: &str = "entity_id";
pub const DEVICE: &str = "device";
pub const ATTRIBUTES: &str = "attributes";
pub const CR: &str = "cr";
/// The parameter of the `attributes` input that names its columns, comma-separated.
pub const ATTRIBUTES_PARAMETER: &str = "attributes";

const INPUTS: [&str; 3] = [ENTITY_ID, DEVICE, ATTRIBUTES];

fn invalid(message: String) -> ServeError {
    ServeError::InvalidRequest(message)
}

/// The model's inputs as `ModelMetadata` lists them.
pub fn input_metadata(attributes: &[String]) -> Vec<TensorMetadata> {
    let names =
        InferParameter { parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(attributes.join(","))) };
    vec![
        TensorMetadata { name: ENTITY_ID.into(), datatype: "INT64".into(), shape: vec![-1], ..Default::default() },
        TensorMetadata { name: DEVICE.into(), datatype: "BYTES".into(), shape: vec![-1], ..Default::default() },
        TensorMetadata {
            name: ATTRIBUTES.into(),
            datatype: "INT8".into(),
            shape: vec![-1, attributes.len() as i64],
            parameters: [(ATTRIBUTES_PARAMETER.to_owned(), names)].into(),
        },
    ]
}

pub fn output_metadata() -> Vec<TensorMetadata> {
    vec![TensorMetadata { name: CR.into(), datatype: "FP64".into(), shape: vec![-1], ..Default::default() }]
}

/// Checks the outputs a request names: `cr` is the only one; none named means every output.
pub fn check_outputs<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), ServeError> {
    match names.into_iter().find(|name| *name != CR) {
        Some(other) => Err(invalid(format!("unknown output '{other}' (the model's only output is '{CR}')"))),
        None => Ok(()),
    }
}

/// One input tensor of a request, whichever protocol carried it.
#[derive(Debug)]
pub struct InputTensor<'a> {
    pub name: &'a str,
    pub datatype: &'a str,
    pub shape: &'a [i64],
    pub contents: Contents<'a>,
}

/// Where an input's elements are.
#[derive(Debug)]
pub enum Contents<'a> {
    /// gRPC's typed contents; none means no elements.
    Typed(Option<&'a InferTensorContents>),
    /// Little-endian bytes, a BYTES element as a 4-byte length and its bytes.
    Raw(&'a [u8]),
    /// A JSON tensor's `data`.
    Json(&'a JsonData),
}

/// The inputs of a gRPC `ModelInfer` request: typed contents, or raw ones
/// (`raw_input_contents`, one entry per input), never both.
pub fn grpc_inputs(request: &ModelInferRequest) -> Result<Vec<InputTensor<'_>>, ServeError> {
    let raw = !request.raw_input_contents.is_empty();
    if raw && request.raw_input_contents.len() != request.inputs.len() {
        return Err(invalid(format!(
            "raw_input_contents has {} entries for {} inputs; it needs one per input",
            request.raw_input_contents.len(),
            request.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (i, tensor) in request.inputs.iter().enumerate() {
        let contents = if raw {
            if tensor.contents.is_some() {
                return Err(invalid(format!(
                    "input '{}' has contents while the request has raw_input_contents; use one or the other",
                    tensor.name
                )));
            }
            Contents::Raw(&request.raw_input_contents[i])
        } else {
            Contents::Typed(tensor.contents.as_ref())
        };
        inputs.push(InputTensor { name: &tensor.name, datatype: &tensor.datatype, shape: &tensor.shape, contents });
    }
    Ok(inputs)
}

impl InputTensor<'_> {
    fn expect_datatype(&self, datatype: &str) -> Result<(), ServeError> {
        if self.datatype != datatype {
            return Err(invalid(format!(
                "input '{}': datatype must be {datatype}, got {:?}",
                self.name, self.datatype
            )));
        }
        Ok(())
    }

    /// Checks the shape against `[rows]` or `[rows, width]`, returning the row count.
    fn rows(&self, width: Option<usize>) -> Result<usize, ServeError> {
        let shape = self.shape;
        let expected = match width {
            None => "[N]".to_owned(),
            Some(k) => format!("[N, {k}]"),
        };
        let wrong = || invalid(format!("input '{}': shape must be {expected}, got {shape:?}", self.name));
        let dims = if width.is_some() { 2 } else { 1 };
        if shape.len() != dims || shape.iter().any(|&d| d < 0) {
            return Err(wrong());
        }
        if let Some(k) = width
            && shape[1] != k as i64
        {
            return Err(invalid(format!(
                "input '{}': shape must be {expected} (one column per attribute the model uses), got {shape:?}",
                self.name
            )));
        }
        if let Contents::Json(data) = self.contents {
            data.nesting_fits(shape).map_err(|problem| invalid(format!("input '{}': {problem}", self.name)))?;
        }
        usize::try_from(shape[0]).map_err(|_| wrong())
    }

    fn count_mismatch(&self, found: usize, expected: usize) -> ServeError {
        invalid(format!(
            "input '{}': shape {:?} has {expected} elements but the contents hold {found}",
            self.name, self.shape
        ))
    }

    fn raw_length_mismatch(&self, found: usize, expected: usize) -> ServeError {
        invalid(format!(
            "input '{}': raw contents of shape {:?} must be {expected} bytes, got {found}",
            self.name, self.shape
        ))
    }

    /// Where element `index` of a `[N, width]` tensor is, for a message.
    fn position(&self, index: usize, width: usize) -> String {
        if width == 1 { format!("row {index}") } else { format!("row {}, column {}", index / width, index % width) }
    }

    /// A JSON element of the wrong type.
    fn wrong_element(&self, index: usize, width: usize, expected: &str, found: &JsonElement) -> ServeError {
        invalid(format!(
            "input '{}' {}: expected {expected} ({}), found {found}",
            self.name,
            self.position(index, width),
            self.datatype
        ))
    }

    /// The JSON elements, `count` of them.
    fn json_elements<'d>(&self, data: &'d JsonData, count: usize) -> Result<&'d [JsonElement], ServeError> {
        if data.elements.len() != count {
            return Err(self.count_mismatch(data.elements.len(), count));
        }
        Ok(&data.elements)
    }
}

/// Reads and checks a request's inputs against the tensor layout, the model's
/// attributes and the row limit (`MAX_PREDICT_ROWS`): the keyword rows.
pub fn decode(inputs: &[InputTensor<'_>], attributes: &[String], max_rows: usize) -> Result<KeywordRows, ServeError> {
    let mut found: [Option<&InputTensor>; 3] = [None, None, None];
    for tensor in inputs {
        let Some(slot) = INPUTS.iter().position(|name| *name == tensor.name) else {
            return Err(invalid(format!(
                "unknown input '{}' (the inputs are {})",
                tensor.name,
                INPUTS.map(|n| format!("'{n}'")).join(", ")
            )));
        };
        if found[slot].is_some() {
            return Err(invalid(format!("input '{}' appears twice", tensor.name)));
        }
        found[slot] = Some(tensor);
    }
    let [entity, device, attribute] = found;
    let (entity, device, attribute) =
        (present(entity, ENTITY_ID)?, present(device, DEVICE)?, present(attribute, ATTRIBUTES)?);

    entity.expect_datatype("INT64")?;
    device.expect_datatype("BYTES")?;
    attribute.expect_datatype("INT8")?;
    let n = entity.rows(None)?;
    for (input, rows) in [(device, device.rows(None)?), (attribute, attribute.rows(Some(attributes.len()))?)] {
        if rows != n {
            return Err(invalid(format!(
                "input '{}' has {rows} rows but input '{ENTITY_ID}' has {n}; every input needs one row per keyword and device",
                input.name
            )));
        }
    }
    ServeError::check_rows(n, max_rows)?;

    let entity_ids = int64s(entity, n)?;
    let devices = strings(device, n)?;
    let width = attributes.len();
    let values = int8s(attribute, n * width, width)?;

    let names: Arc<[String]> = attributes.iter().cloned().collect();
    let mut rows = KeywordRows::with_capacity(names, n);
    let mut row_values = Vec::with_capacity(width);
    for row in 0..n {
        row_values.clear();
        for (column, &value) in values[row * width..(row + 1) * width].iter().enumerate() {
            // Checked here, where the datatype is still known: a -1 must not wrap to 255.
            if !(0..=1).contains(&value) {
                return Err(invalid(format!(
                    "input '{ATTRIBUTES}' row {row}, column {column} ('{}'): must be 0 or 1, found {value}",
                    attributes[column]
                )));
            }
            row_values.push(value as u32);
        }
        let name = std::str::from_utf8(devices[row]).map_err(|_| {
            invalid(format!("input '{DEVICE}' row {row}: not UTF-8 text (expected Computer, Smartphone or Tablet)"))
        })?;
        rows.push_checked(entity_ids[row], name, &row_values).map_err(|problem| match problem {
            RowProblem::UnknownDevice(_) => invalid(format!("input '{DEVICE}' row {row}: {problem}")),
            // Widths and values were checked above.
            other => invalid(format!("input '{ATTRIBUTES}' row {row}: {other}")),
        })?;
    }
    Ok(rows)
}

fn present<'t, 'a>(input: Option<&'t InputTensor<'a>>, name: &str) -> Result<&'t InputTensor<'a>, ServeError> {
    input.ok_or_else(|| invalid(format!("missing input '{name}'")))
}

fn int64s(input: &InputTensor<'_>, count: usize) -> Result<Vec<i64>, ServeError> {
    match input.contents {
        Contents::Typed(contents) => {
            let values = contents.map(|c| c.int64_contents.as_slice()).unwrap_or_default();
            if values.len() != count {
                return Err(input.count_mismatch(values.len(), count));
            }
            Ok(values.to_vec())
        }
        Contents::Raw(bytes) => {
            if bytes.len() != count * 8 {
                return Err(input.raw_length_mismatch(bytes.len(), count * 8));
            }
            Ok(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
        }
        Contents::Json(data) => input
            .json_elements(data, count)?
            .iter()
            .enumerate()
            .map(|(i, element)| match element {
                JsonElement::Int(value) => Ok(*value),
                other => Err(input.wrong_element(i, 1, "an integer", other)),
            })
            .collect(),
    }
}

/// INT8 elements, widened: a typed or JSON value outside -128..=127 is kept
/// as it is, for the 0/1 check to name.
fn int8s(input: &InputTensor<'_>, count: usize, width: usize) -> Result<Vec<i64>, ServeError> {
    match input.contents {
        Contents::Typed(contents) => {
            let values = contents.map(|c| c.int_contents.as_slice()).unwrap_or_default();
            if values.len() != count {
                return Err(input.count_mismatch(values.len(), count));
            }
            Ok(values.iter().map(|&v| i64::from(v)).collect())
        }
        Contents::Raw(bytes) => {
            if bytes.len() != count {
                return Err(input.raw_length_mismatch(bytes.len(), count));
            }
            Ok(bytes.iter().map(|&b| i64::from(b as i8)).collect())
        }
        Contents::Json(data) => input
            .json_elements(data, count)?
            .iter()
            .enumerate()
            .map(|(i, element)| match element {
                JsonElement::Int(value) => Ok(*value),
                other => Err(input.wrong_element(i, width.max(1), "an integer", other)),
            })
            .collect(),
    }
}

fn strings<'a>(input: &InputTensor<'a>, count: usize) -> Result<Vec<&'a [u8]>, ServeError> {
    match input.contents {
        Contents::Typed(contents) => {
            let values: Vec<&[u8]> =
                contents.map(|c| c.bytes_contents.iter().map(|b| b.as_slice()).collect()).unwrap_or_default();
            if values.len() != count {
                return Err(input.count_mismatch(values.len(), count));
            }
            Ok(values)
        }
        // Each element: a 4-byte little-endian length, then that many bytes.
        Contents::Raw(mut bytes) => {
            let total = bytes.len();
            let mut values = Vec::with_capacity(count);
            for row in 0..count {
                let cut = |what: &str| {
                    invalid(format!(
                        "input '{}': raw contents of {total} bytes end inside row {row}'s {what}; BYTES elements are a 4-byte little-endian length and then the bytes",
                        input.name
                    ))
                };
                let Some((length, rest)) = bytes.split_first_chunk::<4>() else { return Err(cut("length")) };
                let length = u32::from_le_bytes(*length) as usize;
                if rest.len() < length {
                    return Err(cut("value"));
                }
                let (value, rest) = rest.split_at(length);
                values.push(value);
                bytes = rest;
            }
            if !bytes.is_empty() {
                return Err(invalid(format!(
                    "input '{}': raw contents have {} bytes left over after {count} elements",
                    input.name,
                    bytes.len()
                )));
            }
            Ok(values)
        }
        Contents::Json(data) => input
            .json_elements(data, count)?
            .iter()
            .enumerate()
            .map(|(i, element)| match element {
                JsonElement::Text(text) => Ok(text.as_bytes()),
                other => Err(input.wrong_element(i, 1, "a string", other)),
            })
            .collect(),
    }
}

/// The rates as FP64 little-endian bytes: raw gRPC contents and REST's binary tensor data alike.
pub fn raw_rates(cr: &[f64]) -> Vec<u8> {
    cr.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The gRPC `cr` output, raw or typed as the request was.
pub fn grpc_output(cr: &[f64], raw: bool) -> (InferOutputTensor, Option<Vec<u8>>) {
    let mut tensor = InferOutputTensor {
        name: CR.into(),
        datatype: "FP64".into(),
        shape: vec![cr.len() as i64],
        ..Default::default()
    };
    if raw {
        (tensor, Some(raw_rates(cr)))
    } else {
        tensor.contents = Some(InferTensorContents { fp64_contents: cr.to_vec(), ..Default::default() });
        (tensor, None)
    }
}
