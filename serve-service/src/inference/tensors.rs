//! Open Inference Protocol tensors to keyword rows and rates back: the fixed
//! tensor layout of every model version.
//!
//! Inputs: `entity_id` INT64 `[N]`, `device` BYTES `[N]` (Computer, Smartphone or
//! Tablet) and `attributes` INT8 `[N, k]`, whose columns are the attributes the
//! model uses in the order `ModelMetadata` lists them. Output: `cr` FP64 `[N]`.

use std::sync::Arc;

use crs_domain::data::{KeywordRows, RowProblem};
use crs_proto::inference::model_infer_request::InferInputTensor;
use crs_proto::inference::model_infer_response::InferOutputTensor;
use crs_proto::inference::model_metadata_response::TensorMetadata;
use crs_proto::inference::{InferParameter, InferTensorContents, ModelInferRequest, infer_parameter};

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

/// The rows of a ModelInfer request, and whether it came raw (and so gets a raw answer).
pub struct Decoded {
    pub rows: KeywordRows,
    pub raw: bool,
}

/// One input's data: typed contents or its raw bytes.
enum Data<'a> {
    Typed(Option<&'a InferTensorContents>),
    Raw(&'a [u8]),
}

struct Input<'a> {
    tensor: &'a InferInputTensor,
    data: Data<'a>,
}

impl Input<'_> {
    fn name(&self) -> &str {
        &self.tensor.name
    }

    fn expect_datatype(&self, datatype: &str) -> Result<(), ServeError> {
        if self.tensor.datatype != datatype {
            return Err(invalid(format!(
                "input '{}': datatype must be {datatype}, got {:?}",
                self.name(),
                self.tensor.datatype
            )));
        }
        Ok(())
    }

    /// Checks the shape against `[rows]` or `[rows, width]`, returning the row count.
    fn rows(&self, width: Option<usize>) -> Result<usize, ServeError> {
        let shape = &self.tensor.shape;
        let expected = match width {
            None => "[N]".to_owned(),
            Some(k) => format!("[N, {k}]"),
        };
        let wrong = || invalid(format!("input '{}': shape must be {expected}, got {shape:?}", self.name()));
        let dims = if width.is_some() { 2 } else { 1 };
        if shape.len() != dims || shape.iter().any(|&d| d < 0) {
            return Err(wrong());
        }
        if let Some(k) = width
            && shape[1] != k as i64
        {
            return Err(invalid(format!(
                "input '{}': shape must be {expected} (one column per attribute the model uses), got {shape:?}",
                self.name()
            )));
        }
        usize::try_from(shape[0]).map_err(|_| wrong())
    }

    fn count_mismatch(&self, found: usize, expected: usize) -> ServeError {
        invalid(format!(
            "input '{}': shape {:?} has {expected} elements but the contents hold {found}",
            self.name(),
            self.tensor.shape
        ))
    }

    fn raw_length_mismatch(&self, found: usize, expected: usize) -> ServeError {
        invalid(format!(
            "input '{}': raw contents of shape {:?} must be {expected} bytes, got {found}",
            self.name(),
            self.tensor.shape
        ))
    }
}

/// Reads and checks a ModelInfer request's inputs against the tensor layout,
/// the model's attributes and the row limit.
pub fn decode(request: &ModelInferRequest, attributes: &[String], max_rows: usize) -> Result<Decoded, ServeError> {
    let raw = !request.raw_input_contents.is_empty();
    if raw && request.raw_input_contents.len() != request.inputs.len() {
        return Err(invalid(format!(
            "raw_input_contents has {} entries for {} inputs; it needs one per input",
            request.raw_input_contents.len(),
            request.inputs.len()
        )));
    }
    let mut found: [Option<Input>; 3] = [None, None, None];
    for (i, tensor) in request.inputs.iter().enumerate() {
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
        let data = if raw {
            if tensor.contents.is_some() {
                return Err(invalid(format!(
                    "input '{}' has contents while the request has raw_input_contents; use one or the other",
                    tensor.name
                )));
            }
            Data::Raw(&request.raw_input_contents[i])
        } else {
            Data::Typed(tensor.contents.as_ref())
        };
        found[slot] = Some(Input { tensor, data });
    }
    let [entity, device, attribute] = found;
    let (entity, device, attribute) =
        (present(entity, ENTITY_ID)?, present(device, DEVICE)?, present(attribute, ATTRIBUTES)?);

    entity.expect_datatype("INT64")?;
    device.expect_datatype("BYTES")?;
    attribute.expect_datatype("INT8")?;
    let n = entity.rows(None)?;
    for (input, rows) in [(&device, device.rows(None)?), (&attribute, attribute.rows(Some(attributes.len()))?)] {
        if rows != n {
            return Err(invalid(format!(
                "input '{}' has {rows} rows but input '{ENTITY_ID}' has {n}; every input needs one row per keyword and device",
                input.name()
            )));
        }
    }
    if n > max_rows {
        return Err(invalid(format!("request has {n} rows; the limit is {max_rows}")));
    }

    let entity_ids = int64s(&entity, n)?;
    let devices = strings(&device, n)?;
    let values = int8s(&attribute, n * attributes.len())?;

    let names: Arc<[String]> = attributes.iter().cloned().collect();
    let mut rows = KeywordRows::with_capacity(names, n);
    let width = attributes.len();
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
    Ok(Decoded { rows, raw })
}

fn present<'a>(input: Option<Input<'a>>, name: &str) -> Result<Input<'a>, ServeError> {
    input.ok_or_else(|| invalid(format!("missing input '{name}'")))
}

fn int64s(input: &Input<'_>, count: usize) -> Result<Vec<i64>, ServeError> {
    match input.data {
        Data::Typed(contents) => {
            let values = contents.map(|c| c.int64_contents.as_slice()).unwrap_or_default();
            if values.len() != count {
                return Err(input.count_mismatch(values.len(), count));
            }
            Ok(values.to_vec())
        }
        Data::Raw(bytes) => {
            if bytes.len() != count * 8 {
                return Err(input.raw_length_mismatch(bytes.len(), count * 8));
            }
            Ok(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
        }
    }
}

fn int8s(input: &Input<'_>, count: usize) -> Result<Vec<i32>, ServeError> {
    match input.data {
        Data::Typed(contents) => {
            let values = contents.map(|c| c.int_contents.as_slice()).unwrap_or_default();
            if values.len() != count {
                return Err(input.count_mismatch(values.len(), count));
            }
            Ok(values.to_vec())
        }
        Data::Raw(bytes) => {
            if bytes.len() != count {
                return Err(input.raw_length_mismatch(bytes.len(), count));
            }
            Ok(bytes.iter().map(|&b| i32::from(b as i8)).collect())
        }
    }
}

fn strings<'a>(input: &Input<'a>, count: usize) -> Result<Vec<&'a [u8]>, ServeError> {
    match input.data {
        Data::Typed(contents) => {
            let values: Vec<&[u8]> =
                contents.map(|c| c.bytes_contents.iter().map(|b| b.as_slice()).collect()).unwrap_or_default();
            if values.len() != count {
                return Err(input.count_mismatch(values.len(), count));
            }
            Ok(values)
        }
        // Each element: a 4-byte little-endian length, then that many bytes.
        Data::Raw(mut bytes) => {
            let total = bytes.len();
            let mut values = Vec::with_capacity(count);
            for row in 0..count {
                let cut = |what: &str| {
                    invalid(format!(
                        "input '{}': raw contents of {total} bytes end inside row {row}'s {what}; BYTES elements are a 4-byte little-endian length and then the bytes",
                        input.name()
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
                    input.name(),
                    bytes.len()
                )));
            }
            Ok(values)
        }
    }
}

/// The `cr` output, raw or typed as the request was.
pub fn output(cr: &[f64], raw: bool) -> (InferOutputTensor, Option<Vec<u8>>) {
    let mut tensor = InferOutputTensor {
        name: CR.into(),
        datatype: "FP64".into(),
        shape: vec![cr.len() as i64],
        ..Default::default()
    };
    if raw {
        (tensor, Some(cr.iter().flat_map(|v| v.to_le_bytes()).collect()))
    } else {
        tensor.contents = Some(InferTensorContents { fp64_contents: cr.to_vec(), ..Default::default() });
        (tensor, None)
    }
}
