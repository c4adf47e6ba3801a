//! The binaries under test start without the caller's settings: every
//! variable any of them reads is in the list the harness clears.

mod common;

use smoke_test::CONFIG_VARS;

#[test]
fn children_start_without_any_setting_the_binaries_read() {
    let read = common::settings_read();
    assert!(read.contains("MODEL_VER") && read.contains("BUCKET_URL"), "{read:?}");
    let missing: Vec<&String> = read.iter().filter(|name| !CONFIG_VARS.contains(&name.as_str())).collect();
    assert!(missing.is_empty(), "the smoke test's children would inherit these from the shell: {missing:?}");
}
