//! Column names and value domains of the raw data contract.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const ENTITY_ID: &str = "entity_id";
pub const DEVICE: &str = "device";
pub const WEEK: &str = "week";
pub const CLICKS: &str = "Clicks";
pub const CONVERSIONS: &str = "Conversions";
/// Attribute columns are `att1`, `att2`, ... numbered without gaps from 1.
pub const ATTRIBUTE_PREFIX: &str = "att";

/// The device a click came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Device {
    Computer,
    Smartphone,
    Tablet,
}

impl Device {
    pub const ALL: [Device; 3] = [Device::Computer, Device::Smartphone, Device::Tablet];

    pub fn as_str(self) -> &'static str {
        match self {
            Device::Computer => "Computer",
            Device::Smartphone => "Smartphone",
            Device::Tablet => "Tablet",
        }
    }

    /// Position in [`Device::ALL`], for per-device arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses the exact names the data uses.
    pub fn parse(name: &str) -> Option<Device> {
        Device::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// "Computer, Smartphone or Tablet", for error messages.
    pub fn expected_names() -> &'static str {
        "Computer, Smartphone or Tablet"
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number of an attribute column name (`att17` is 17), if it is one.
pub fn attribute_number(column: &str) -> Option<u32> {
    let digits = column.strip_prefix(ATTRIBUTE_PREFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn attribute_name(number: u32) -> String {
    format!("{ATTRIBUTE_PREFIX}{number}")
}

/// Which side of the contract a file is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// `entity_id, att1..attN, device, week, Clicks, Conversions`.
    Training,
    /// `entity_id, att1..attN, device`, with `week` optional; outcome columns are ignored.
    PredictionInput,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_numbers_are_strict() {
        assert_eq!(attribute_number("att1"), Some(1));
        assert_eq!(attribute_number("att160"), Some(160));
        assert_eq!(attribute_number("att"), None);
        assert_eq!(attribute_number("att01"), None);
        assert_eq!(attribute_number("att1a"), None);
        assert_eq!(attribute_number("Att1"), None);
    }

    #[test]
    fn device_names_round_trip() {
        for device in Device::ALL {
            assert_eq!(Device::parse(device.as_str()), Some(device));
        }
        assert_eq!(Device::parse("computer"), None);
    }
}
