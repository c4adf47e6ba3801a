//! The data contract, rule by rule: each bad input is refused with a message
//! naming the file, the data row (1 is the first line after the header) and the
//! column; the cleaning rules are counted, not failed.

mod common;

use std::io::Cursor;
use std::sync::Arc;

use common::{HEADER, csv, csv_with, gzip, read, read_error, synth_csv};
use crs_domain::data::{
    Attributes, DEVICE, DataError, Device, KeywordRows, Problem, TableKind, TableReader, TrainingTable, keyword_rows,
};
use crs_domain::features::FeaturePipeline;

// ---------------------------------------------------------------------------
// Header rules

#[test]
fn missing_clicks_column_is_named() {
    let text = csv_with("entity_id,att1,att2,att3,device,week,Conversions", &["1,0,1,0,Computer,31,2"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: missing required column(s): Clicks");
}

#[test]
fn every_missing_required_column_is_named_in_one_message() {
    let text = csv_with("entity_id,att1,device", &["1,0,Computer"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: missing required column(s): week, Clicks, Conversions");
}

#[test]
fn gap_in_attribute_numbering_names_the_missing_attribute() {
    let text = csv_with("entity_id,att1,att3,device,week,Clicks,Conversions", &["1,0,1,Computer,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: missing required column(s): att2");
}

#[test]
fn no_attribute_columns_is_refused() {
    let text = csv_with("entity_id,device,week,Clicks,Conversions", &["1,Computer,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: no attribute columns (att1, att2, ...)");
}

#[test]
fn duplicated_column_is_named_with_both_positions() {
    let text = csv_with("entity_id,att1,att2,att2,device,week,Clicks,Conversions", &["1,0,1,1,Computer,31,5,1"]);
    assert_eq!(
        read_error("t.csv", &text),
        "t.csv: column 'att2': column appears twice in the header (positions 3 and 4)"
    );
    let text = csv_with("entity_id,att1,device,week,Clicks,Conversions,Clicks", &["1,0,Computer,31,5,1,5"]);
    assert_eq!(
        read_error("t.csv", &text),
        "t.csv: column 'Clicks': column appears twice in the header (positions 5 and 7)"
    );
}

#[test]
fn empty_file_is_refused() {
    assert_eq!(read_error("empty.csv", ""), "empty.csv: the file is empty");
}

#[test]
fn empty_gzip_file_is_refused() {
    let err = TrainingTable::read("empty.csv.gz", Cursor::new(gzip(b""))).unwrap_err();
    assert_eq!(err.to_string(), "empty.csv.gz: the file is empty");
}

#[test]
fn header_only_is_refused() {
    assert_eq!(read_error("h.csv", &csv(&[])), "h.csv: the file has a header but no data rows");
    // Without a final newline too.
    assert_eq!(read_error("h.csv", HEADER), "h.csv: the file has a header but no data rows");
}

// ---------------------------------------------------------------------------
// Cell rules

#[test]
fn non_numeric_clicks_names_row_and_column() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Computer,31,abc,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2, column 'Clicks': expected an integer, found \"abc\"");
}

#[test]
fn non_numeric_values_in_other_integer_columns_are_named() {
    for (row, column, expected) in [
        ("x7,0,1,0,Computer,31,5,1", "entity_id", "\"x7\""),
        ("1,0,yes,0,Computer,31,5,1", "att2", "\"yes\""),
        ("1,0,1,0,Computer,w31,5,1", "week", "\"w31\""),
        ("1,0,1,0,Computer,31,5,1.5", "Conversions", "\"1.5\""),
        ("1,0,1,0,Computer,31,2.0,1", "Clicks", "\"2.0\""),
    ] {
        let text = csv(&["1,0,1,0,Computer,31,5,1", "1,0,1,0,Computer,32,5,1", row]);
        assert_eq!(
            read_error("t.csv", &text),
            format!("t.csv: row 3, column '{column}': expected an integer, found {expected}"),
            "input row {row:?}"
        );
    }
}

#[test]
fn missing_value_names_row_and_column() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Computer,31,,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2, column 'Clicks': value is missing");
    let text = csv(&["1,0,,0,Computer,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 1, column 'att2': value is missing");
    let text = csv(&["1,0,1,0,Computer,31,5,1", "1,0,1,0,Computer,32,5,1", ",0,1,0,Tablet,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 3, column 'entity_id': value is missing");
}

#[test]
fn missing_device_is_a_missing_value() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2, column 'device': value is missing");
}

#[test]
fn attributes_outside_zero_and_one_are_refused() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,2,0,Computer,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2, column 'att2': expected 0 or 1, found 2");
    let text = csv(&["1,0,1,-1,Computer,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 1, column 'att3': expected 0 or 1, found -1");
}

#[test]
fn unknown_device_is_named_with_the_expected_ones() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "1,0,1,0,Phone,31,5,1"]);
    assert_eq!(
        read_error("t.csv", &text),
        "t.csv: row 2, column 'device': unknown device \"Phone\" (expected Computer, Smartphone or Tablet)"
    );
    // Device names are exact.
    let text = csv(&["1,0,1,0,computer,31,5,1"]);
    assert!(read_error("t.csv", &text).starts_with("t.csv: row 1, column 'device': unknown device \"computer\""));
}

#[test]
fn negative_clicks_and_conversions_are_refused() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Computer,31,-3,0"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2, column 'Clicks': must not be negative, found -3");
    let text = csv(&["1,0,1,0,Computer,31,5,-1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 1, column 'Conversions': must not be negative, found -1");
}

#[test]
fn row_with_more_fields_than_the_header_is_refused() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Computer,31,5,1,9"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2: has 9 fields but the header has 8");
}

#[test]
fn row_with_fewer_fields_than_the_header_is_missing_values() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Computer,31,5"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2, column 'Conversions': value is missing");
}

#[test]
fn blank_line_inside_the_data_is_a_row_of_missing_values() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "", "2,0,1,0,Computer,31,5,1"]);
    assert_eq!(read_error("t.csv", &text), "t.csv: row 2, column 'entity_id': value is missing");
}

#[test]
fn first_bad_row_is_reported_and_within_it_the_first_column() {
    // Row 2 has two problems, row 3 another: row 2's leftmost problem wins.
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Phone,31,-1,0", "3,5,1,0,Computer,31,5,1"]);
    assert_eq!(
        read_error("t.csv", &text),
        "t.csv: row 2, column 'device': unknown device \"Phone\" (expected Computer, Smartphone or Tablet)"
    );
}

#[test]
fn data_error_exposes_file_row_column_and_problem() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Computer,31,-3,0"]);
    let DataError { file, row, column, problem } = read("dir/t.csv", &text).unwrap_err();
    assert_eq!(file, "dir/t.csv");
    assert_eq!(row, Some(2));
    assert_eq!(column.as_deref(), Some("Clicks"));
    assert!(matches!(problem, Problem::Negative(-3)), "{problem:?}");
}

// ---------------------------------------------------------------------------
// Counted, not failed

#[test]
fn conversions_above_clicks_are_clipped_and_counted() {
    let text = csv(&["1,0,1,0,Computer,31,5,7", "1,0,1,0,Computer,32,4,1", "2,1,0,0,Tablet,31,3,9"]);
    let mut table = read("t.csv", &text).unwrap();
    assert_eq!(table.counts.conversions_clipped, 2);
    assert_eq!(table.counts.read, 3);
    let obs = table.observations().unwrap();
    assert_eq!(obs.clicks, vec![9.0, 3.0]);
    assert_eq!(obs.conversions, vec![6.0, 3.0]);
}

#[test]
fn exact_duplicate_rows_are_dropped_and_counted() {
    let text = csv(&[
        "1,0,1,0,Computer,31,5,1",
        "1,0,1,0,Computer,31,5,1",
        // Same keyword, device and outcome in another week: not a duplicate.
        "1,0,1,0,Computer,32,5,1",
        "1,0,1,0,Computer,31,5,1",
    ]);
    let mut table = read("t.csv", &text).unwrap();
    assert_eq!(table.counts.read, 4);
    assert_eq!(table.counts.duplicates_dropped, 2);
    let obs = table.observations().unwrap();
    assert_eq!(obs.clicks, vec![10.0]);
    assert_eq!(obs.conversions, vec![2.0]);
    assert_eq!(table.counts.used, 2);
}

#[test]
fn zero_click_rows_are_dropped_by_observations_and_counted() {
    let text = csv(&[
        "1,0,1,0,Computer,31,0,0",
        "1,0,1,0,Computer,32,6,2",
        // Only zero clicks: no observation at all.
        "2,1,1,0,Smartphone,31,0,0",
        "2,1,1,0,Smartphone,32,0,0",
    ]);
    let mut table = read("t.csv", &text).unwrap();
    assert_eq!(table.counts.zero_clicks_dropped, 0, "counted by observations()");
    let obs = table.observations().unwrap();
    assert_eq!(table.counts.zero_clicks_dropped, 3);
    assert_eq!(table.counts.used, 1);
    assert_eq!(table.counts.observations, 1);
    assert_eq!(obs.rows.entity_id, vec![1]);
    assert_eq!(obs.clicks, vec![6.0]);
}

#[test]
fn observations_sum_weeks_per_keyword_and_device() {
    let text = csv(&[
        "7,1,0,1,Computer,31,10,1",
        "7,1,0,1,Smartphone,31,4,0",
        "3,0,1,1,Tablet,31,2,1",
        "7,1,0,1,Computer,32,20,2",
        "7,1,0,1,Smartphone,32,6,3",
    ]);
    let mut table = read("t.csv", &text).unwrap();
    let obs = table.observations().unwrap();
    // One observation per (entity_id, device), in order of first appearance.
    assert_eq!(obs.rows.entity_id, vec![7, 7, 3]);
    assert_eq!(obs.rows.device, vec![Device::Computer, Device::Smartphone, Device::Tablet]);
    assert_eq!(obs.clicks, vec![30.0, 10.0, 2.0]);
    assert_eq!(obs.conversions, vec![3.0, 3.0, 1.0]);
    assert_eq!(obs.rows.attribute_names(), ["att1", "att2", "att3"]);
    assert_eq!(obs.rows.attributes(0), [1, 0, 1]);
    assert_eq!(obs.rows.attributes(2), [0, 1, 1]);
    assert_eq!(obs.total_clicks(), 42.0);
    let counts = &table.counts;
    assert_eq!((counts.read, counts.used, counts.observations), (5, 5, 3));
}

#[test]
fn columns_outside_the_contract_are_ignored_and_listed() {
    let text = csv_with(
        "entity_id,att1,att2,device,campaign,week,Clicks,Conversions",
        &["1,0,1,Computer,not a number,31,5,1", "1,0,1,Computer,,32,5,2"],
    );
    let mut table = read("t.csv", &text).unwrap();
    assert_eq!(table.ignored_columns, vec!["campaign"]);
    assert_eq!(table.observations().unwrap().conversions, vec![3.0]);
}

#[test]
fn windows_line_endings_are_accepted() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "1,0,1,0,Computer,32,5,2"]).replace('\n', "\r\n");
    let mut table = read("crlf.csv", &text).unwrap();
    let obs = table.observations().unwrap();
    assert_eq!(obs.clicks, vec![10.0]);
    assert_eq!(obs.conversions, vec![3.0]);
}

// ---------------------------------------------------------------------------
// CSV or gzip CSV, recognised by content

fn read_file(path: &std::path::Path) -> Result<TrainingTable, DataError> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    TrainingTable::read(&name, std::fs::File::open(path).unwrap())
}

#[test]
fn gzip_and_plain_csv_are_recognised_by_content_not_name() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "1,0,1,0,Computer,32,5,2", "2,1,0,0,Tablet,31,8,0"]);
    let dir = tempfile::tempdir().unwrap();
    let plain_named_gz = dir.path().join("plain.csv.gz");
    let gzip_named_csv = dir.path().join("gzip.csv");
    std::fs::write(&plain_named_gz, text.as_bytes()).unwrap();
    std::fs::write(&gzip_named_csv, gzip(text.as_bytes())).unwrap();

    let mut from_plain = read_file(&plain_named_gz).unwrap();
    let mut from_gzip = read_file(&gzip_named_csv).unwrap();
    assert!(from_plain.frame.equals(&from_gzip.frame));
    let (a, b) = (from_plain.observations().unwrap(), from_gzip.observations().unwrap());
    assert_eq!(a.clicks, vec![10.0, 8.0]);
    assert_eq!((a.clicks, a.conversions, a.rows.entity_id), (b.clicks, b.conversions, b.rows.entity_id));
}

#[test]
fn gzip_errors_name_the_row_and_column_like_plain_ones() {
    let text = csv(&["1,0,1,0,Computer,31,5,1", "2,0,1,0,Computer,31,abc,1"]);
    let err = TrainingTable::read("t.csv.gz", Cursor::new(gzip(text.as_bytes()))).unwrap_err();
    assert_eq!(err.to_string(), "t.csv.gz: row 2, column 'Clicks': expected an integer, found \"abc\"");
}

// ---------------------------------------------------------------------------
// Chunked reading

fn all_rows(
    bytes: Vec<u8>,
    chunk_bytes: Option<usize>,
) -> Result<(polars::prelude::DataFrame, Vec<Device>), DataError> {
    let reader = TableReader::open("chunked.csv", Cursor::new(bytes), TableKind::Training, Attributes::All)?;
    let reader = match chunk_bytes {
        Some(n) => reader.with_chunk_bytes(n),
        None => reader,
    };
    let (frame, devices, _) = reader.read_all()?;
    Ok((frame, devices))
}

#[test]
fn small_chunks_give_the_same_rows() {
    let bytes = synth_csv(1, 60, 5, 3);
    let (whole, whole_devices) = all_rows(bytes.clone(), None).unwrap();
    let (chunked, chunked_devices) = all_rows(bytes.clone(), Some(100)).unwrap();
    assert!(whole.height() > 100, "{} rows", whole.height());
    assert!(whole.equals(&chunked));
    assert_eq!(whole_devices, chunked_devices);

    // Chunk by chunk: several chunks, numbered contiguously from row 1.
    let mut reader = TableReader::open("c.csv", Cursor::new(bytes), TableKind::Training, Attributes::All)
        .unwrap()
        .with_chunk_bytes(100);
    let (mut chunks, mut next) = (0, 1);
    while let Some(chunk) = reader.next_chunk().unwrap() {
        assert_eq!(chunk.first_row, next);
        assert_eq!(chunk.devices.len(), chunk.frame.height());
        next += chunk.frame.height() as u64;
        chunks += 1;
    }
    assert!(chunks > 10, "{chunks} chunks");
    assert_eq!(reader.rows_read(), whole.height() as u64);
}

/// Synthetic rows with line `row` (1-based data row) replaced.
fn synth_with_bad_row(row: usize, replace: impl Fn(&str) -> String) -> Vec<u8> {
    let text = String::from_utf8(synth_csv(1, 60, 3, 3)).unwrap();
    let lines: Vec<String> =
        text.lines().enumerate().map(|(i, line)| if i == row { replace(line) } else { line.to_owned() }).collect();
    (lines.join("\n") + "\n").into_bytes()
}

/// Rewrites one CSV line.
type Edit<'a> = Box<dyn Fn(&str) -> String + 'a>;

#[test]
fn errors_past_the_first_chunk_name_the_right_row() {
    // Header: entity_id,att1,att2,att3,device,week,Clicks,Conversions.
    let field = |line: &str, index: usize, value: &str| {
        let mut fields: Vec<&str> = line.split(',').collect();
        fields[index] = value;
        fields.join(",")
    };
    let cases: [(usize, Edit<'_>, String); 4] = [
        (57, Box::new(|l| field(l, 6, "abc")), "row 57, column 'Clicks': expected an integer, found \"abc\"".into()),
        (63, Box::new(|l| field(l, 2, "3")), "row 63, column 'att2': expected 0 or 1, found 3".into()),
        (71, Box::new(|l| field(l, 4, "Phone")), "row 71, column 'device': unknown device \"Phone\"".into()),
        (80, Box::new(|l| format!("{l},1")), "row 80: has 9 fields but the header has 8".into()),
    ];
    for (row, replace, expected) in cases {
        let bytes = synth_with_bad_row(row, replace);
        for chunk_bytes in [None, Some(100), Some(333)] {
            let err = all_rows(bytes.clone(), chunk_bytes).unwrap_err().to_string();
            assert!(err.starts_with(&format!("chunked.csv: {expected}")), "chunk {chunk_bytes:?}: {err}");
        }
    }
}

// ---------------------------------------------------------------------------
// Prediction input

#[test]
fn prediction_input_may_lack_week_and_outcomes() {
    let text = "entity_id,att1,att2,att3,device\n1,0,1,1,Computer\n2,1,0,0,Tablet\n";
    let reader =
        TableReader::open("p.csv", Cursor::new(text.as_bytes().to_vec()), TableKind::PredictionInput, Attributes::All)
            .unwrap();
    assert_eq!(reader.attribute_names().as_ref(), ["att1", "att2", "att3"]);
    let (frame, devices, _) = reader.read_all().unwrap();
    assert_eq!(frame.height(), 2);
    assert_eq!(devices, vec![Device::Computer, Device::Tablet]);
}

#[test]
fn prediction_input_ignores_outcome_columns() {
    let text = "entity_id,att1,device,week,Clicks,Conversions\n1,1,Smartphone,33,n/a,\n";
    let reader =
        TableReader::open("p.csv", Cursor::new(text.as_bytes().to_vec()), TableKind::PredictionInput, Attributes::All)
            .unwrap();
    assert_eq!(reader.ignored_columns(), ["Clicks", "Conversions"]);
    let (frame, _, _) = reader.read_all().unwrap();
    assert_eq!(frame.height(), 1);
}

#[test]
fn prediction_input_reads_only_the_attributes_asked_for() {
    let text = "entity_id,att1,att2,att3,device\n5,0,7,1,Computer\n6,1,x,0,Smartphone\n";
    let wanted: Arc<[String]> = vec!["att3".to_owned(), "att1".to_owned()].into();
    let mut reader = TableReader::open(
        "p.csv",
        Cursor::new(text.as_bytes().to_vec()),
        TableKind::PredictionInput,
        Attributes::Only(wanted.clone()),
    )
    .unwrap();
    // att2 is neither parsed nor checked.
    assert_eq!(reader.ignored_columns(), ["att2"]);
    let chunk = reader.next_chunk().unwrap().unwrap();
    let rows = keyword_rows(chunk, reader.attribute_names()).unwrap();
    assert_eq!(rows.attribute_names(), ["att3", "att1"]);
    assert_eq!(rows.entity_id, vec![5, 6]);
    assert_eq!(rows.attributes(0), [1, 0]);
    assert_eq!(rows.attributes(1), [0, 1]);
    assert!(reader.next_chunk().unwrap().is_none());
}

#[test]
fn prediction_input_missing_a_needed_attribute_is_refused_by_name() {
    let text = "entity_id,att1,att2,device\n1,0,1,Computer\n";
    let wanted: Arc<[String]> = vec!["att1".to_owned(), "att5".to_owned(), "att2".to_owned()].into();
    let err = TableReader::open(
        "p.csv",
        Cursor::new(text.as_bytes().to_vec()),
        TableKind::PredictionInput,
        Attributes::Only(wanted),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "p.csv: missing required column(s): att5");
}

#[test]
fn prediction_input_without_device_is_refused() {
    let text = "entity_id,att1\n1,0\n";
    let err =
        TableReader::open("p.csv", Cursor::new(text.as_bytes().to_vec()), TableKind::PredictionInput, Attributes::All)
            .unwrap_err();
    assert_eq!(err.to_string(), format!("p.csv: missing required column(s): {DEVICE}"));
}

#[test]
fn prediction_input_cells_are_still_checked() {
    let text = "entity_id,att1,device\n1,0,Computer\n2,2,Computer\n";
    let reader =
        TableReader::open("p.csv", Cursor::new(text.as_bytes().to_vec()), TableKind::PredictionInput, Attributes::All)
            .unwrap();
    let err = reader.read_all().unwrap_err();
    assert_eq!(err.to_string(), "p.csv: row 2, column 'att1': expected 0 or 1, found 2");
}

#[test]
fn prediction_input_attributes_out_of_range_get_the_contract_messages() {
    // Prediction input attributes are parsed narrow; values outside that type's
    // range must be reported like any other value that is not 0 or 1.
    for (value, expected) in [
        ("300", "row 2, column 'att2': expected 0 or 1, found 300"),
        ("-1", "row 2, column 'att2': expected 0 or 1, found -1"),
        ("99999999999", "row 2, column 'att2': expected 0 or 1, found 99999999999"),
        ("-99999999999", "row 2, column 'att2': expected 0 or 1, found -99999999999"),
        ("1.5", "row 2, column 'att2': expected an integer, found \"1.5\""),
    ] {
        let text = format!("entity_id,att1,att2,device\n1,0,1,Computer\n2,1,{value},Tablet\n");
        let reader =
            TableReader::open("p.csv", Cursor::new(text.into_bytes()), TableKind::PredictionInput, Attributes::All)
                .unwrap();
        let err = reader.read_all().unwrap_err();
        assert_eq!(err.to_string(), format!("p.csv: {expected}"), "{value}");
    }
}

#[test]
fn feature_pipeline_rejects_missing_attributes_by_name() {
    let names = |n: &[&str]| -> Arc<[String]> { n.iter().map(|s| s.to_string()).collect() };
    let mut train = KeywordRows::new(names(&["att1", "att2", "att3"]));
    train.push_checked(1, "Computer", &[0, 1, 0]).unwrap();
    train.push_checked(2, "Tablet", &[1, 0, 1]).unwrap();
    let pipeline = FeaturePipeline::fit(&train);
    assert_eq!(pipeline.attributes(), ["att1", "att2", "att3"]);

    let mut input = KeywordRows::new(names(&["att2"]));
    input.push_checked(3, "Computer", &[1]).unwrap();
    let err = pipeline.transform(&input, pipeline.attributes()).unwrap_err();
    assert_eq!(err.to_string(), "missing attribute column(s) the model needs: att1, att3");
}

// ---------------------------------------------------------------------------
// Broken files (the whole corpus runs through the services in
// train-service/tests/bad_files.rs; these pin the reader's part)

/// A field of megabytes among many columns and rows: polars' guess of where
/// lines end, to split the chunk among threads, must not turn it into a vague
/// parse error, and the message must not carry the field.
#[test]
fn a_field_of_10_mb_is_named_briefly() {
    let text = String::from_utf8(synth_csv(1, 20, 160, 4)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let device = lines[0].split(',').position(|c| c == DEVICE).unwrap();
    let mut fields: Vec<String> = lines[2].split(',').map(str::to_owned).collect();
    fields[device] = "A".repeat(10 << 20);
    lines[2] = fields.join(",");
    let e = read_error("big.csv", &(lines.join("\n") + "\n"));
    assert!(e.starts_with("big.csv: row 2, column 'device': unknown device \"AAAA"), "{}", &e[..e.len().min(300)]);
    assert!(e.contains("... (10485760 bytes)") && e.len() < 200, "{}", &e[..e.len().min(300)]);
}

#[test]
fn gzip_cut_short_or_damaged_is_named() {
    let zipped = gzip(&synth_csv(1, 20, 3, 4));
    let error = |bytes: Vec<u8>| TrainingTable::read("t.csv.gz", Cursor::new(bytes)).unwrap_err().to_string();
    assert_eq!(error(zipped[..zipped.len() / 2].to_vec()), "t.csv.gz: the gzip data ends early: the file is truncated");
    let mut damaged = zipped.clone();
    let middle = damaged.len() / 2;
    damaged[middle..middle + 16].iter_mut().for_each(|b| *b ^= 0x5a);
    assert!(error(damaged).starts_with("t.csv.gz: the gzip data is corrupt ("));
    assert_eq!(error(gzip(b"")), "t.csv.gz: the file is empty");
}

#[test]
fn a_byte_that_is_not_utf8_is_named_with_its_row_and_column() {
    let bytes = format!("{HEADER}\n1,0,1,0,Computer,1,10,1\n2,1,0,1,Tab\u{1}let,1,8,2\n")
        .into_bytes()
        .into_iter()
        .map(|b| if b == 1 { 0xff } else { b })
        .collect::<Vec<u8>>();
    let e = TrainingTable::read("u.csv", Cursor::new(bytes)).unwrap_err().to_string();
    assert_eq!(e, "u.csv: row 2, column 'device': value is not valid UTF-8 text");
}

/// A quoted field may hold the separator and line ends, wherever a chunk ends.
#[test]
fn quoted_fields_with_commas_and_line_ends_are_read_across_chunks() {
    let mut text = format!("{HEADER},note\n");
    for i in 0..50 {
        text.push_str(&format!("{i},0,1,0,Tablet,1,10,1,\"a, b\nc {i}\"\n"));
    }
    let mut reader = TableReader::open("q.csv", Cursor::new(text.into_bytes()), TableKind::Training, Attributes::All)
        .unwrap()
        .with_chunk_bytes(64);
    let mut rows = 0;
    while let Some(chunk) = reader.next_chunk().unwrap() {
        rows += chunk.frame.height();
    }
    assert_eq!(rows, 50);
}

/// A stray quote would make polars read every row after it into one field: the
/// file is refused at the row where the quote opens, not read short.
#[test]
fn a_quote_never_closed_is_refused_at_its_row() {
    let mut text = format!("{HEADER},note\n");
    for i in 1..=50 {
        let note = if i == 7 { "a 5\" screen" } else { "plain" };
        text.push_str(&format!("{i},0,1,0,Tablet,1,10,1,{note}\n"));
    }
    for chunk_bytes in [64, 1 << 20] {
        let mut reader =
            TableReader::open("q.csv", Cursor::new(text.clone().into_bytes()), TableKind::Training, Attributes::All)
                .unwrap()
                .with_chunk_bytes(chunk_bytes);
        let e = loop {
            match reader.next_chunk() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("read to the end with chunks of {chunk_bytes} bytes"),
                Err(e) => break e.to_string(),
            }
        };
        assert_eq!(e, "q.csv: row 7: a quoted field is never closed", "chunks of {chunk_bytes} bytes");
    }
}

/// Found by fuzzing: the gap before a huge attribute number is counted, not
/// spelled out name by name (that took gigabytes).
#[test]
fn a_huge_attribute_number_is_a_short_error() {
    let text = "entity_id,att1,att20000000,device,week,Clicks,Conversions\n1,0,1,Tablet,1,10,1\n";
    let e = read_error("h.csv", text);
    assert_eq!(
        e,
        "h.csv: missing required column(s): att2, att3, att4, att5, att6, att7, att8, att9, att10, att11, and 19999988 more"
    );
}
