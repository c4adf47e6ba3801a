//! The registry of model versions, and [`ModelVer`], the typed name of one.
//!
//! Two kinds of version exist: the ones this build trains ([`REGISTRY`], fixed
//! at compile time) and imported ones, declared in a bucket
//! (`config/<ver>/model.yaml`) and made known to the process by
//! [`ModelVer::declare`] where a name is resolved against that bucket (the
//! platform does it at its edges: config and requests). A declared version is
//! interned once per process: a small leaked record per distinct name, bounded
//! by the versions a bucket declares, so that `ModelVer` stays `Copy` and its
//! name `&'static str`.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::imported::Imported;
use super::template::{Registered, RegisteredVersion};
use super::{v0, v1, v2};

/// Every registered version, in order. The one place a new version is added.
pub static REGISTRY: &[&dyn RegisteredVersion] =
    &[&Registered::<v0::V0>(PhantomData), &Registered::<v1::V1>(PhantomData), &Registered::<v2::V2>(PhantomData)];

/// The imported versions declared in this process so far, by name.
static DECLARED: Mutex<Vec<&'static Imported>> = Mutex::new(Vec::new());

/// Most characters in a declared version's name.
pub const MAX_VERSION_NAME: usize = 64;

fn declared() -> Vec<&'static Imported> {
    DECLARED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown model version {name:?} (known: {})", known_versions().join(", "))]
pub struct UnknownVersion {
    pub name: String,
}

/// Why a name cannot be declared as an imported version.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclareError {
    #[error(
        "model version {0} is trained by this build, not imported: an imported model needs a version name of its own"
    )]
    BuiltIn(String),
    #[error(
        "{0:?} is not a model version name: use 1 to {MAX_VERSION_NAME} letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    BadName(String),
}

/// The names of the registered versions, then those declared in this process.
pub fn known_versions() -> Vec<&'static str> {
    REGISTRY.iter().map(|v| v.name()).chain(declared().iter().map(|v| v.name())).collect()
}

/// A model version known to this build or declared for imports, e.g. `v1`.
/// Parsing and declaring are the only ways to make one, so holding a
/// `ModelVer` means the name was checked against the registry or a bucket's
/// declarations; it is also always a safe bucket key segment.
#[derive(Clone, Copy)]
pub struct ModelVer(&'static dyn RegisteredVersion);

impl ModelVer {
    /// A registered version, or one declared in this process.
    pub fn parse(name: &str) -> Result<Self, UnknownVersion> {
        if let Some(version) = REGISTRY.iter().copied().find(|v| v.name() == name) {
            return Ok(ModelVer(version));
        }
        declared()
            .into_iter()
            .find(|v| v.name() == name)
            .map(|v| ModelVer(v))
            .ok_or_else(|| UnknownVersion { name: name.to_owned() })
    }

    /// The imported version `name`, as a bucket declares it: made known to
    /// this process from now on (once; declaring it again returns the same
    /// version). Refuses the registered versions' names and names that are not
    /// one safe key segment.
    pub fn declare(name: &str) -> Result<Self, DeclareError> {
        Self::declare_check(name)?;
        let mut declared = DECLARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(version) = declared.iter().find(|v| v.name() == name) {
            return Ok(ModelVer(*version));
        }
        let version: &'static Imported = Box::leak(Box::new(Imported::new(Box::leak(name.into()))));
        declared.push(version);
        Ok(ModelVer(version))
    }

    /// Whether `name` could be declared: not a registered version's name, and
    /// one safe key segment. Checked before any bucket read for it.
    pub fn declare_check(name: &str) -> Result<(), DeclareError> {
        if REGISTRY.iter().any(|v| v.name() == name) {
            return Err(DeclareError::BuiltIn(name.to_owned()));
        }
        let safe = (1..=MAX_VERSION_NAME).contains(&name.len())
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !safe {
            return Err(DeclareError::BadName(name.to_owned()));
        }
        Ok(())
    }

    /// Every registered version in registry order, then every version
    /// declared in this process, by name.
    pub fn all() -> impl Iterator<Item = ModelVer> {
        let mut declared = declared();
        declared.sort_by_key(|v| v.name());
        let registered = REGISTRY.iter().copied().map(ModelVer);
        registered.chain(declared.into_iter().map(|v| ModelVer(v)).collect::<Vec<_>>())
    }

    /// Whether the version's runs are imported model files rather than trained here.
    pub fn is_imported(self) -> bool {
        self.0.imported()
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

    #[test]
    fn declared_versions_are_interned_once_and_parse_from_then_on() {
        assert!(ModelVer::parse("reg-test-xgb").is_err());
        let declared = ModelVer::declare("reg-test-xgb").unwrap();
        assert_eq!(declared.name(), "reg-test-xgb");
        assert!(declared.is_imported() && !ModelVer::parse("v1").unwrap().is_imported());
        assert_eq!(ModelVer::parse("reg-test-xgb").unwrap(), declared);
        let again = ModelVer::declare("reg-test-xgb").unwrap();
        assert!(std::ptr::eq(again.name(), declared.name()), "one record per name");
        assert!(ModelVer::all().any(|v| v == declared));
        assert_eq!(serde_json::from_str::<ModelVer>("\"reg-test-xgb\"").unwrap(), declared);
        assert_eq!(
            ModelVer::declare("v1").unwrap_err().to_string(),
            "model version v1 is trained by this build, not imported: an imported model needs a version name of its own"
        );
        for bad in ["", "../x", "a/b", ".hidden", "-x", "with space", &"x".repeat(65)] {
            assert!(matches!(ModelVer::declare(bad), Err(DeclareError::BadName(_))), "{bad:?}");
        }
    }
}
