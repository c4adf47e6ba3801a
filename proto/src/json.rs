//! How the generated messages' fields that prost stores as numbers or as
//! `prost_types` values appear in JSON: enums by name, times as RFC 3339 text
//! (`null` when unset).

use serde::Serializer;

use crate::train::{CycleState, JobState, Stage};

fn enum_name<S: Serializer>(name: Option<&str>, value: i32, serializer: S) -> Result<S::Ok, S::Error> {
    match name {
        Some(name) => serializer.serialize_str(name),
        // A number this build does not know: say so rather than guess a name.
        None => serializer.serialize_i32(value),
    }
}

pub(crate) fn job_state<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    enum_name(JobState::try_from(*value).ok().map(|s| s.as_str_name()), *value, serializer)
}

pub(crate) fn stage<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    enum_name(Stage::try_from(*value).ok().map(|s| s.as_str_name()), *value, serializer)
}

pub(crate) fn cycle_state<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    enum_name(CycleState::try_from(*value).ok().map(|s| s.as_str_name()), *value, serializer)
}

pub(crate) fn time<S: Serializer>(value: &Option<prost_types::Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match value.as_ref().and_then(crate::datetime) {
        Some(at) => serializer.serialize_str(&at.to_rfc3339()),
        None => serializer.serialize_none(),
    }
}

/// For counts that only some answers carry: zero is left out of the JSON.
pub(crate) fn is_zero(value: &u32) -> bool {
    *value == 0
}
