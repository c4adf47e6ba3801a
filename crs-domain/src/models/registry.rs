//! The registry of model versions, and [`ModelVer`], the typed name of one.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::template::{Registered, RegisteredVersion};
use super::{v0, v1, v2};

/// Every registered version, in order. The one place a new version is added.
pub static REGISTRY: &[&dyn RegisteredVersion] =
    &[&Registered::<v0::V0>(PhantomData), &Registered::<v1::V1>(PhantomData), &Registered::<v2::V2>(PhantomData)];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown model version {name:?} (known: {})", known_versions().join(", "))]
pub struct UnknownVersion {
    pub name: String,
}

pub fn known_versions() -> Vec<&'static str> {
    REGISTRY.iter().map(|v| v.name()).collect()
}

/// A model version known to this build, e.g. `v1`. Parsing is the only way to
/// make one, so holding a `ModelVer` means the name was checked against the
/// registry; it is also always a safe bucket key segment.
#[derive(Clone, Copy)]
pub struct ModelVer(&'static dyn RegisteredVersion);

impl ModelVer {
    pub fn parse(name: &str) -> Result<Self, UnknownVersion> {
        REGISTRY
            .iter()
            .copied()
            .find(|v| v.name() == name)
            .map(ModelVer)
            .ok_or_else(|| UnknownVersion { name: name.to_owned() })
    }

    /// Every registered version, in registry order.
    pub fn all() -> impl Iterator<Item = ModelVer> {
        REGISTRY.iter().copied().map(ModelVer)
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The version's template: hyperparameters, fit and load.
    pub fn version(self) -> &'static dyn RegisteredVersion {
        self.0
    }
}

impl PartialEq for ModelVer {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ModelVer {}

impl std::hash::Hash for ModelVer {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl PartialOrd for ModelVer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ModelVer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl fmt::Display for ModelVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for ModelVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelVer({})", self.name())
    }
}

impl FromStr for ModelVer {
    type Err = UnknownVersion;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ModelVer::parse(name)
    }
}

impl Serialize for ModelVer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ModelVer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ModelVer::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_by_name_and_serialize_as_their_name() {
        let v1 = ModelVer::parse("v1").unwrap();
        assert_eq!(v1.name(), "v1");
        assert_eq!(serde_json::to_string(&v1).unwrap(), "\"v1\"");
        assert_eq!(serde_json::from_str::<ModelVer>("\"v1\"").unwrap(), v1);
        let err = ModelVer::parse("v9").unwrap_err().to_string();
        assert!(err.contains("\"v9\"") && err.contains("v0, v1, v2"), "{err}");
        assert!(serde_json::from_str::<ModelVer>("\"../x\"").is_err());
        assert_eq!(ModelVer::all().map(ModelVer::name).collect::<Vec<_>>(), known_versions());
    }
}
