//! The common case of a prediction-input chunk, read without polars.
//!
//! A batch spends most of its time parsing its input, and almost every input is
//! plain: no quotes, `\n` line ends, integers in plain digits, attributes `0` or
//! `1`, devices spelled exactly. This scanner reads only that form, straight into
//! the model rows a prediction needs, and gives up on the first byte outside it.
//! The caller then parses the chunk with polars and validates it, so every other
//! input (valid but unusual, or wrong) is accepted or reported exactly as before:
//! the scanner decides nothing about the contract, it only takes a shortcut
//! through inputs the contract plainly accepts.
//!
//! Most of a row is attribute columns of one byte each, `0,1,1,0,...`. A run of
//! such columns is checked eight bytes at a time (digits `0`/`1` at even
//! offsets, commas at odd ones) and only the columns the model reads are picked
//! out of it; a run that is not in that form (an ignored column holding longer
//! text, say) is read field by field, which gives the same values.

use super::schema::Device;

/// What a header column holds, and where its values go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cell {
    /// Not read; any unquoted text.
    Skip,
    /// `entity_id`: an i64 in plain digits, optionally negative, kept.
    EntityId,
    /// Another integer column (`week`): an i64 in the same form, checked and dropped.
    Integer,
    /// `0` or `1`, into byte `slot` of the row's attributes.
    Binary(usize),
    /// A device name.
    Device,
}

/// A chunk's rows: what [`crate::data::KeywordRows`] is made of.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Scanned {
    pub entity_ids: Vec<i64>,
    pub devices: Vec<Device>,
    /// Row-major, one byte per attribute slot.
    pub attributes: Vec<u8>,
}

/// How one header's rows are scanned, worked out once per file.
#[derive(Debug)]
pub(super) struct Scanner {
    cells: Vec<Cell>,
    steps: Vec<Step>,
    /// Attribute slots per row.
    width: usize,
}

#[derive(Debug)]
enum Step {
    /// `cells[cell]`, read on its own.
    Field { cell: usize },
    /// `cells[first..first + count]`, none of them the row's last, each
    /// `Skip` or `Binary`: in the plain form `2 * count` bytes of digit-comma
    /// pairs. `picks` are the (byte offset, slot) of its `Binary` cells.
    Run { first: usize, count: usize, picks: Vec<(usize, usize)> },
}

/// Fewest one-byte columns in a row worth checking as a run.
const MIN_RUN: usize = 4;

impl Scanner {
    /// `cells` in header order; `width` attribute slots, each named by one `Binary` cell.
    pub(super) fn new(cells: Vec<Cell>, width: usize) -> Self {
        let mut steps = Vec::new();
        let last = cells.len().saturating_sub(1);
        let mut at = 0;
        while at < cells.len() {
            let count = cells[at..last].iter().take_while(|c| matches!(c, Cell::Skip | Cell::Binary(_))).count();
            if count >= MIN_RUN {
                let picks = (0..count)
                    .filter_map(|i| match cells[at + i] {
                        Cell::Binary(slot) => Some((2 * i, slot)),
                        _ => None,
                    })
                    .collect();
                steps.push(Step::Run { first: at, count, picks });
                at += count;
            } else {
                steps.push(Step::Field { cell: at });
                at += 1;
            }
        }
        Scanner { cells, steps, width }
    }

    /// Reads `bytes` (whole lines) as rows, or returns `None` as soon as anything
    /// is not in the plain form, or when there are no rows.
    pub(super) fn scan(&self, bytes: &[u8]) -> Option<Scanned> {
        if bytes.is_empty() || memchr::memchr2(b'"', b'\r', bytes).is_some() {
            return None;
        }
        let line_bytes = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len()) + 1;
        let rows = bytes.len() / line_bytes + 1;
        let mut out = Scanned {
            entity_ids: Vec::with_capacity(rows),
            devices: Vec::with_capacity(rows),
            attributes: Vec::with_capacity(rows * self.width),
        };
        let last = self.cells.len().checked_sub(1)?;
        let mut pos = 0;
        while pos < bytes.len() {
            let row = out.attributes.len();
            out.attributes.resize(row + self.width, 0);
            for step in &self.steps {
                match *step {
                    Step::Field { cell } => {
                        pos = self.field(bytes, pos, self.cells[cell], cell == last, row, &mut out)?;
                    }
                    Step::Run { first, count, ref picks } => {
                        match bytes.get(pos..pos + 2 * count).filter(|run| is_plain_run(run)) {
                            Some(run) => {
                                let attributes = &mut out.attributes[row..];
                                for &(offset, slot) in picks {
                                    attributes[slot] = run[offset] & 1;
                                }
                                pos += 2 * count;
                            }
                            None => {
                                for (cell, &kind) in self.cells[first..first + count].iter().enumerate() {
                                    pos = self.field(bytes, pos, kind, first + cell == last, row, &mut out)?;
                                }
                            }
                        }
                    }
                }
            }
        }
        (!out.entity_ids.is_empty() && out.entity_ids.len() == out.devices.len()).then_some(out)
    }

    /// Reads the field at `pos` and its separator (a comma, or for the row's
    /// last field a line end or the end of the chunk); returns where the next
    /// field starts.
    fn field(&self, bytes: &[u8], pos: usize, cell: Cell, last: bool, row: usize, out: &mut Scanned) -> Option<usize> {
        let end = match cell {
            // The hot case: one digit, then its separator.
            Cell::Binary(slot) => {
                out.attributes[row + slot] = match bytes.get(pos)? {
                    b'0' => 0,
                    b'1' => 1,
                    _ => return None,
                };
                pos + 1
            }
            _ => {
                let rest = bytes.get(pos..)?;
                let end = pos + memchr::memchr2(b',', b'\n', rest).unwrap_or(rest.len());
                let field = &bytes[pos..end];
                match cell {
                    Cell::Skip => {}
                    Cell::EntityId => out.entity_ids.push(parse_i64(field)?),
                    Cell::Integer => {
                        parse_i64(field)?;
                    }
                    Cell::Device => out.devices.push(Device::parse(std::str::from_utf8(field).ok()?)?),
                    Cell::Binary(_) => unreachable!("handled above"),
                }
                end
            }
        };
        let separator = bytes.get(end).copied();
        let expected = if last { separator.is_none_or(|b| b == b'\n') } else { separator == Some(b',') };
        expected.then_some(end + 1)
    }
}

/// `0,` or `1,` over and over: a digit at every even offset, a comma at every odd one.
fn is_plain_run(run: &[u8]) -> bool {
    // Eight bytes at a time: the low bit of each digit is masked off, so both
    // digits compare equal to `0`.
    const MASK: u64 = u64::from_le_bytes([0xFE, 0xFF, 0xFE, 0xFF, 0xFE, 0xFF, 0xFE, 0xFF]);
    const PLAIN: u64 = u64::from_le_bytes(*b"0,0,0,0,");
    let words = run.chunks_exact(8);
    let rest = words.remainder();
    let mut bad = 0;
    for word in words {
        bad |= (u64::from_le_bytes(word.try_into().expect("8 bytes")) & MASK) ^ PLAIN;
    }
    bad == 0 && rest.chunks_exact(2).all(|pair| pair[0] & 0xFE == b'0' && pair[1] == b',')
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

    const CELLS: [Cell; 5] = [Cell::EntityId, Cell::Binary(1), Cell::Skip, Cell::Device, Cell::Binary(0)];

    fn scanner() -> Scanner {
        Scanner::new(CELLS.to_vec(), 2)
    }

    #[test]
    fn plain_rows_are_read_into_their_slots() {
        let scanned = scanner().scan(b"7,1,x,Tablet,0\n-8,0,,Computer,1").unwrap();
        assert_eq!(scanned.entity_ids, vec![7, -8]);
        assert_eq!(scanned.attributes, vec![0, 1, 1, 0]);
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
            b"",
        ] {
            assert_eq!(scanner().scan(input), None, "{}", String::from_utf8_lossy(input));
        }
    }

    /// A header like the batch's: an id, a long run of one-byte columns (some
    /// read, some not), a device and a week.
    fn wide() -> (Scanner, Vec<Cell>) {
        let mut cells = vec![Cell::EntityId];
        cells.extend(
            (0..21).map(|i| if i % 3 == 1 { Cell::Skip } else { Cell::Binary(i / 3 * 2 + usize::from(i % 3 == 2)) }),
        );
        cells.extend([Cell::Device, Cell::Integer]);
        (Scanner::new(cells.clone(), 14), cells)
    }

    #[test]
    fn a_run_read_eight_bytes_at_a_time_reads_what_field_by_field_reads() {
        let (scanner, _) = wide();
        assert!(scanner.steps.iter().any(|s| matches!(s, Step::Run { count: 21, .. })), "{:?}", scanner.steps);
        let row = |values: &str| format!("42,{values},Smartphone,7\n");
        let ones = row(&["1"; 21].join(","));
        let mixed = row("0,1,1,0,0,1,1,0,1,0,0,0,1,1,1,0,1,0,1,1,0");
        // Ignored columns may hold any unquoted text: the run is then read field by field.
        let text = row("0,1,1,0,long text,1,1,0,1,0,-,0,1,1,1,0,1,0,1,1,0");
        let scanned = scanner.scan(format!("{ones}{mixed}{text}").as_bytes()).unwrap();
        assert_eq!(scanned.entity_ids, vec![42; 3]);
        let read: Vec<&[u8]> = scanned.attributes.chunks(14).collect();
        assert_eq!(read[0], [1; 14]);
        // Slot 2k is column 3k of the run, slot 2k + 1 column 3k + 2.
        assert_eq!(read[1], [0, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0]);
        assert_eq!(read[2], read[1]);
    }

    #[test]
    fn a_run_cut_short_or_broken_gives_up() {
        let (scanner, _) = wide();
        let values = ["0"; 21].join(",");
        for bad in [
            values.replacen('0', "2", 1),
            values.replacen(",", "", 1),
            values.replacen(",", ";", 1),
            values[..values.len() - 2].to_owned(),
            format!("{values},0"),
        ] {
            let input = format!("42,{bad},Smartphone,7\n");
            assert_eq!(scanner.scan(input.as_bytes()), None, "{input}");
        }
        // A line end inside the run: two short rows.
        let input = format!("42,{},Smartphone,7\n", values.replacen(",", "\n", 1));
        assert_eq!(scanner.scan(input.as_bytes()), None, "{input}");
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
