//! Where CSV records and fields end, found as polars' reader finds them: the
//! reader cuts chunks at record ends, and diagnosis splits a refused chunk into
//! the same fields polars saw.

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Boundary {
    Field,
    Record,
}

/// Calls `on` at each separator and line end outside quotes, as polars' reader
/// splits: every `"` opens or closes a quoted field. Returns where the quoted
/// field still open at the end began, if one is.
pub(super) fn for_each_boundary(bytes: &[u8], mut on: impl FnMut(usize, Boundary)) -> Option<usize> {
    let mut opened = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => opened = if opened.is_some() { None } else { Some(i) },
            b',' if opened.is_none() => on(i, Boundary::Field),
            b'\n' if opened.is_none() => on(i, Boundary::Record),
            _ => {}
        }
    }
    opened
}

/// Where the last whole record of `buf` ends: after its last line end outside
/// a quoted field, since a quoted field may hold line ends.
pub(super) fn last_record_end(buf: &[u8]) -> Option<usize> {
    // Most files quote nothing: one backwards scan. memchr's vector search, as
    // a batch cuts every chunk of its input here.
    if memchr::memchr(b'"', buf).is_none() {
        return memchr::memrchr(b'\n', buf).map(|i| i + 1);
    }
    let mut end = None;
    for_each_boundary(buf, |at, boundary| {
        if boundary == Boundary::Record {
            end = Some(at + 1);
        }
    });
    end
}

/// CSV text as records of raw fields, split as polars splits them. For diagnosis only.
pub(super) fn split_records(bytes: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut start = 0;
    for_each_boundary(bytes, |at, boundary| {
        let field = &bytes[start..at];
        start = at + 1;
        match boundary {
            Boundary::Field => fields.push(field),
            Boundary::Record => {
                fields.push(field.strip_suffix(b"\r").unwrap_or(field));
                records.push(std::mem::take(&mut fields));
            }
        }
    });
    if start < bytes.len() {
        fields.push(&bytes[start..]);
        records.push(fields);
    }
    records
}
