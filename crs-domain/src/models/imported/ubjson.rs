//! UBJSON (Universal Binary JSON, draft 12), as xgboost writes `.ubj` models,
//! decoded into a JSON value so that both encodings are read by one parser.
//! Non-finite floats become the strings `NaN`, `Infinity` and `-Infinity`, as
//! xgboost's JSON spells them (see `xgboost.rs`).

use serde_json::{Map, Number, Value};

use super::xgboost::NON_FINITE;

/// Containers nested deeper than this are refused rather than recursed into.
const MAX_DEPTH: usize = 64;

/// Whether `bytes` start like a UBJSON object: `{` then a key length's
/// integer marker or an optimized container's `$`/`#`. A JSON object has
/// whitespace or a quote there.
pub(super) fn looks_like(bytes: &[u8]) -> bool {
    bytes.len() > 1 && bytes[0] == b'{' && b"iUIlL$#}".contains(&bytes[1])
}

pub(super) fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(0)?;
    if reader.at != bytes.len() {
        return Err(format!("{} bytes after the end of the document", bytes.len() - reader.at));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("unexpected end of the file at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// An integer of the type `marker`, for lengths and counts.
    fn integer(&mut self, marker: u8) -> Result<i64, String> {
        Ok(match marker {
            b'i' => i64::from(i8::from_be_bytes(self.array()?)),
            b'U' => i64::from(self.byte()?),
            b'I' => i64::from(i16::from_be_bytes(self.array()?)),
            b'l' => i64::from(i32::from_be_bytes(self.array()?)),
            b'L' => i64::from_be_bytes(self.array()?),
            other => return Err(format!("byte {}: {:?} is not an integer type", self.at - 1, other as char)),
        })
    }

    fn length(&mut self) -> Result<usize, String> {
        let marker = self.byte()?;
        let n = self.integer(marker)?;
        let n = usize::try_from(n).map_err(|_| format!("byte {}: negative length {n}", self.at))?;
        // Every element takes at least a byte: a larger count is a corrupt file.
        if n > self.bytes.len() - self.at {
            return Err(format!("byte {}: length {n} runs past the end of the file", self.at));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.length()?;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| format!("byte {at}: a string that is not UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        let marker = self.byte()?;
        self.typed(marker, depth)
    }

    fn typed(&mut self, marker: u8, depth: usize) -> Result<Value, String> {
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::Number(self.integer(marker)?.into()),
            b'd' => float(f64::from(f32::from_be_bytes(self.array()?))),
            b'D' => float(f64::from_be_bytes(self.array()?)),
            b'C' => Value::String(char::from(self.byte()?).to_string()),
            b'S' => Value::String(self.string()?),
            b'H' => {
                let text = self.string()?;
                serde_json::from_str::<Number>(&text).map(Value::Number).map_err(|e| format!("number {text:?}: {e}"))?
            }
            b'[' | b'{' if depth >= MAX_DEPTH => return Err(format!("containers nested over {MAX_DEPTH} deep")),
            b'[' => {
                let (kind, count) = self.container()?;
                let mut items = Vec::with_capacity(count.unwrap_or(0));
                loop {
                    match count {
                        Some(count) if items.len() == count => break,
                        None if self.peek() == Some(b']') => {
                            self.at += 1;
                            break;
                        }
                        _ => {}
                    }
                    let marker = match kind {
                        Some(kind) => kind,
                        None => self.byte()?,
                    };
                    if marker == b'N' && kind.is_none() {
                        continue;
                    }
                    items.push(self.typed(marker, depth + 1)?);
                }
                Value::Array(items)
            }
            b'{' => {
                let (kind, count) = self.container()?;
                let mut map = Map::new();
                let mut read = 0;
                loop {
                    match count {
                        Some(count) if read == count => break,
                        None if self.peek() == Some(b'}') => {
                            self.at += 1;
                            break;
                        }
                        _ => {}
                    }
                    let key = self.string()?;
                    let marker = match kind {
                        Some(kind) => kind,
                        None => self.byte()?,
                    };
                    map.insert(key, self.typed(marker, depth + 1)?);
                    read += 1;
                }
                Value::Object(map)
            }
            other => return Err(format!("byte {}: unknown type marker {:?}", self.at - 1, other as char)),
        })
    }

    /// An optimized container's element type (`$`) and count (`#`), where given.
    fn container(&mut self) -> Result<(Option<u8>, Option<usize>), String> {
        let kind = match self.peek() {
            Some(b'$') => {
                self.at += 1;
                Some(self.byte()?)
            }
            _ => None,
        };
        let count = match self.peek() {
            Some(b'#') => {
                self.at += 1;
                Some(self.length()?)
            }
            _ if kind.is_some() => return Err(format!("byte {}: a typed container without a count", self.at)),
            _ => None,
        };
        Ok((kind, count))
    }
}

fn float(x: f64) -> Value {
    match Number::from_f64(x) {
        Some(number) => Value::Number(number),
        None => {
            let word =
                NON_FINITE.iter().find(|(_, v)| (v.is_nan() && x.is_nan()) || *v == x).map_or("NaN", |(word, _)| word);
            Value::String(word.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_typed_and_plain_containers() {
        // {"a": [1.5f32, NaN], "b": "x", "c": [3 (int8), true, null]}
        let mut bytes = b"{i\x01a[$d#i\x02".to_vec();
        bytes.extend(1.5f32.to_be_bytes());
        bytes.extend(f32::NAN.to_be_bytes());
        bytes.extend(b"i\x01bSi\x01xi\x01c[i\x03TZ]}");
        assert!(looks_like(&bytes));
        let value = decode(&bytes).unwrap();
        assert_eq!(value, serde_json::json!({"a": [1.5, "NaN"], "b": "x", "c": [3, true, null]}));
    }

    #[test]
    fn corrupt_files_are_refused_not_panicked_on() {
        for bytes in [&b"{i\x01a[$d#i\x7f"[..], b"{i\x05ab", b"{i\x01aQ}", b"{i\x01a[$d}", b"{}x"] {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
        let deep = [b'['; 100];
        assert!(decode(&deep).unwrap_err().contains("nested"));
    }
}
