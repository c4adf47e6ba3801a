//! The common case of a prediction-input chunk, read without polars.
//!
//! A batch spends most of its time parsing its input, and almost every input is
//! plain: no quotes, `\n` line ends, integers in plain digits, attributes `0` or
//! `1`, devices spelled exactly. This scanner reads only that form, straight into
//! the columns a model needs, and gives up on the first byte outside it. The
//! caller then parses the chunk with polars and validates it, so every other
//! input (valid but unusual, or wrong) is accepted or reported exactly as before:
//! the scanner decides nothing about the contract, it only takes a shortcut
//! through inputs the contract plainly accepts.

use super::schema::Device;

/// What a header column holds, and where its values go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cell {
    /// Not read; any unquoted text.
    Skip,
    /// An i64 in plain digits, optionally negative, into `integers[slot]`.
    Integer(usize),
    /// `0` or `1`, into `binaries[slot]`.
    Binary(usize),
    /// A device name, into `devices`.
    Device,
}

/// A chunk's values, by column slot.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Scanned {
    pub integers: Vec<Vec<i64>>,
    pub binaries: Vec<Vec<i32>>,
    pub devices: Vec<Device>,
}

/// Reads `bytes` (whole lines) as rows of `cells`, or returns `None` as soon as
/// anything is not in the plain form.
pub(super) fn scan_plain(bytes: &[u8], cells: &[Cell]) -> Option<Scanned> {
    if bytes.contains(&b'"') || bytes.contains(&b'\r') {
        return None;
    }
    let line_bytes = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len()) + 1;
    let rows = bytes.len() / line_bytes + 1;
    let slots = |pick: fn(&Cell) -> bool| cells.iter().filter(|c| pick(c)).count();
    let mut out = Scanned {
        integers: (0..slots(|c| matches!(c, Cell::Integer(_)))).map(|_| Vec::with_capacity(rows)).collect(),
        binaries: (0..slots(|c| matches!(c, Cell::Binary(_)))).map(|_| Vec::with_capacity(rows)).collect(),
        devices: Vec::with_capacity(rows),
    };
    let last = cells.len().checked_sub(1)?;
    let mut pos = 0;
    while pos < bytes.len() {
        for (j, cell) in cells.iter().enumerate() {
            // Every field but the row's last ends in a comma; the last, in a line end or the end of the chunk.
            let end = match cell {
                // The hot case: one digit, then its separator.
                Cell::Binary(slot) => {
                    let value = match bytes.get(pos)? {
                        b'0' => 0,
                        b'1' => 1,
                        _ => return None,
                    };
                    out.binaries[*slot].push(value);
                    pos + 1
                }
                _ => {
                    let end =
                        pos + bytes[pos..].iter().position(|&b| b == b',' || b == b'\n').unwrap_or(bytes.len() - pos);
                    let field = &bytes[pos..end];
                    match cell {
                        Cell::Skip => {}
                        Cell::Integer(slot) => out.integers[*slot].push(parse_i64(field)?),
                        Cell::Device => out.devices.push(Device::parse(std::str::from_utf8(field).ok()?)?),
                        Cell::Binary(_) => unreachable!("handled above"),
                    }
                    end
                }
            };
            let separator = bytes.get(end).copied();
            let expected = if j == last { separator.is_none_or(|b| b == b'\n') } else { separator == Some(b',') };
            if !expected {
                return None;
            }
            pos = end + 1;
        }
    }
    Some(out)
}

/// Plain digits with an optional leading `-`, within i64.
fn parse_i64(field: &[u8]) -> Option<i64> {
    let (negative, digits) = match field.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        // Accumulated negative so that i64::MIN fits.
        value = value.checked_mul(10)?.checked_sub(i64::from(b - b'0'))?;
    }
    if negative { Some(value) } else { value.checked_neg() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELLS: [Cell; 5] = [Cell::Integer(0), Cell::Binary(0), Cell::Skip, Cell::Device, Cell::Binary(1)];

    #[test]
    fn plain_rows_are_read_into_their_slots() {
        let scanned = scan_plain(b"7,1,x,Tablet,0\n-8,0,,Computer,1", &CELLS).unwrap();
        assert_eq!(scanned.integers, vec![vec![7, -8]]);
        assert_eq!(scanned.binaries, vec![vec![1, 0], vec![0, 1]]);
        assert_eq!(scanned.devices, vec![Device::Tablet, Device::Computer]);
    }

    #[test]
    fn anything_outside_the_plain_form_gives_up() {
        for input in [
            &b"7,1,x,Tablet,0\r\n"[..],
            b"7,1,\"x\",Tablet,0\n",
            b"7,2,x,Tablet,0\n",
            b"7,01,x,Tablet,0\n",
            b"7,,x,Tablet,0\n",
            b"+7,1,x,Tablet,0\n",
            b"7 ,1,x,Tablet,0\n",
            b"7,1,x,tablet,0\n",
            b"7,1,x,Tablet\n",
            b"7,1,x,Tablet,0,9\n",
            b"7,1,x,Tablet,0\n\n",
            b"9223372036854775808,1,x,Tablet,0\n",
        ] {
            assert_eq!(scan_plain(input, &CELLS), None, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn integers_cover_the_whole_i64_range() {
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"-0"), Some(0));
        assert_eq!(parse_i64(b"007"), Some(7));
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"1e3"), None);
    }
}
