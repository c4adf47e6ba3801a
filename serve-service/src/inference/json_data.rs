//! A JSON tensor's `data` (the REST side of the Open Inference Protocol): its
//! elements in row-major order, whether the array came flat or nested as the
//! tensor's shape, read in one pass without building a JSON tree, and how it
//! was nested, so that a nesting that contradicts the shape is refused.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One element of a JSON tensor, as the JSON gave it; the tensor's datatype
/// decides later which of these it accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonElement {
    Int(i64),
    /// An integer above `i64::MAX`.
    BigInt(u64),
    Float(f64),
    Bool(bool),
    Text(Box<str>),
    Null,
    Object,
}

impl fmt::Display for JsonElement {
    /// As an error message quotes it: text shortened to 40 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonElement::Int(value) => write!(f, "{value}"),
            JsonElement::BigInt(value) => write!(f, "{value}"),
            JsonElement::Float(value) => write!(f, "{value}"),
            JsonElement::Bool(value) => write!(f, "{value}"),
            JsonElement::Text(text) if text.chars().count() > 40 => {
                write!(f, "{:?}...", text.chars().take(40).collect::<String>())
            }
            JsonElement::Text(text) => write!(f, "{text:?}"),
            JsonElement::Null => f.write_str("null"),
            JsonElement::Object => f.write_str("an object"),
        }
    }
}

/// A tensor's `data`: its elements, flattened, and the lengths of its arrays
/// at each depth (`[2, 3]` for `[[1, 2, 3], [4, 5, 6]]`), or `None` when
/// arrays at one depth differ in length or elements sit at different depths.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JsonData {
    pub elements: Vec<JsonElement>,
    nesting: Option<Vec<usize>>,
}

impl JsonData {
    /// Whether the data's nesting fits `shape`: one flat array, or arrays
    /// nested exactly as the shape. The element count is checked apart.
    pub fn nesting_fits(&self, shape: &[i64]) -> Result<(), String> {
        match &self.nesting {
            None => Err("data is ragged: its arrays at one depth differ in length".to_owned()),
            Some(dims) if dims.len() <= 1 => Ok(()),
            Some(dims) if dims.len() == shape.len() && dims.iter().zip(shape).all(|(&d, &s)| d as i64 == s) => Ok(()),
            Some(dims) => Err(format!("data is nested as {dims:?}, which is not the shape {shape:?}")),
        }
    }
}

/// What the pass over the arrays has seen so far.
#[derive(Default)]
struct Flattening {
    elements: Vec<JsonElement>,
    /// The length of the arrays at each depth, as first seen (inner arrays
    /// end, and are seen, before the ones around them).
    dims: Vec<Option<usize>>,
    /// The depth of the elements, as first seen.
    element_depth: Option<usize>,
    ragged: bool,
}

impl Flattening {
    fn element(&mut self, depth: usize, element: JsonElement) {
        match self.element_depth {
            None => self.element_depth = Some(depth),
            Some(seen) if seen != depth => self.ragged = true,
            Some(_) => {}
        }
        self.elements.push(element);
    }

    fn array(&mut self, depth: usize, length: usize) {
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => self.dims[depth] = Some(length),
            Some(seen) if seen != length => self.ragged = true,
            Some(_) => {}
        }
        // An array where elements were seen (or the other way round) is ragged too.
        if self.element_depth.is_some_and(|element| element <= depth) {
            self.ragged = true;
        }
    }
}

impl<'de> de::Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut flattening = Flattening::default();
        deserializer.deserialize_any(Top(&mut flattening))?;
        let Flattening { elements, dims, element_depth, ragged } = flattening;
        // Elements must sit just below the deepest arrays.
        let ragged = ragged || element_depth.is_some_and(|depth| depth != dims.len());
        // Every depth down to the deepest array has one around it.
        let dims = dims.into_iter().collect::<Option<Vec<usize>>>();
        Ok(JsonData { elements, nesting: dims.filter(|_| !ragged) })
    }
}

/// The `data` value itself, which must be an array.
struct Top<'a>(&'a mut Flattening);

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of the tensor's elements, flat or nested")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Level { flattening: self.0, depth: 0 }.visit_seq(seq)
    }
}

/// A value `depth` arrays deep: an element, or an array one level deeper.
struct Level<'a> {
    flattening: &'a mut Flattening,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tensor element or an array of them")
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.flattening.element(self.depth, JsonElement::Int(value));
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        let element = i64::try_from(value).map_or(JsonElement::BigInt(value), JsonElement::Int);
        self.flattening.element(self.depth, element);
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.flattening.element(self.depth, JsonElement::Float(value));
        Ok(())
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.flattening.element(self.depth, JsonElement::Bool(value));
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.flattening.element(self.depth, JsonElement::Text(value.into()));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.flattening.element(self.depth, JsonElement::Null);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.flattening.element(self.depth, JsonElement::Object);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut length = 0;
        while seq.next_element_seed(Level { flattening: &mut *self.flattening, depth: self.depth + 1 })?.is_some() {
            length += 1;
        }
        self.flattening.array(self.depth, length);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> JsonData {
        serde_json::from_str(json).expect("data")
    }

    #[test]
    fn flat_and_nested_data_give_the_same_elements_in_row_major_order() {
        let flat = parse("[1, 0, 1, 1, 0, 0]");
        let nested = parse("[[1, 0, 1], [1, 0, 0]]");
        assert_eq!(flat.elements, nested.elements);
        assert_eq!(flat.nesting_fits(&[2, 3]), Ok(()));
        assert_eq!(nested.nesting_fits(&[2, 3]), Ok(()));
        let err = nested.nesting_fits(&[3, 2]).unwrap_err();
        assert!(err.contains("nested as [2, 3]") && err.contains("[3, 2]"), "{err}");
        assert_eq!(parse("[]").nesting_fits(&[0]), Ok(()));
        assert_eq!(parse("[[], []]").nesting_fits(&[2, 0]), Ok(()));
    }

    #[test]
    fn ragged_data_is_told_apart() {
        for ragged in ["[[1, 2], [3]]", "[1, [2]]", "[[1], 2]", "[[[1]], [2]]"] {
            let err = parse(ragged).nesting_fits(&[2, 1]).unwrap_err();
            assert!(err.contains("ragged"), "{ragged}: {err}");
        }
    }

    #[test]
    fn every_json_value_is_kept_for_the_datatype_to_judge() {
        let data = parse(r#"[-3, 18446744073709551615, 1.5, true, "Tablet", null, {"a": [1]}]"#);
        assert_eq!(
            data.elements,
            [
                JsonElement::Int(-3),
                JsonElement::BigInt(u64::MAX),
                JsonElement::Float(1.5),
                JsonElement::Bool(true),
                JsonElement::Text("Tablet".into()),
                JsonElement::Null,
                JsonElement::Object,
            ]
        );
        assert_eq!(JsonElement::Text("x".repeat(50).into()).to_string(), format!("{:?}...", "x".repeat(40)));
    }

    #[test]
    fn data_that_is_not_an_array_is_refused() {
        for bad in ["5", "\"Computer\"", "{}", "null"] {
            assert!(serde_json::from_str::<JsonData>(bad).is_err(), "{bad}");
        }
    }
}
