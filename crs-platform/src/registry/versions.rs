//! Model versions by name: the ones this build trains, and the ones a bucket
//! declares for imports (`config/<ver>/model.yaml` holding `framework: xgboost`
//! or `framework: lightgbm`).
//!
//! [`resolve`] is the one place a version name from outside (a setting, a
//! request of any protocol, a crctl argument) becomes a [`ModelVer`]: a name
//! the process knows already (registered, or declared before) is taken at once;
//! another is looked up in the bucket's declarations and, if declared there,
//! made known to the process from then on ([`ModelVer::declare`]). A
//! declaration is read once per process: removing it later does not unknow the
//! version in a running service (its runs stay where they are).

use crs_domain::models::imported::Framework;
use crs_domain::models::{DeclareError, ModelVer, UnknownVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::storage::bucket::{Bucket, StorageError};
use crate::storage::layout;

/// `config/<ver>/model.yaml`: what declares a version for imports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// The library the version's model files come from.
    pub framework: Framework,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("{unknown}{}", declared_list(.declared))]
    Unknown { unknown: UnknownVersion, declared: Vec<String> },
    #[error("{key}: {reason}")]
    BadDeclaration { key: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn declared_list(declared: &[String]) -> String {
    match declared.is_empty() {
        true => "; no version is declared for imports in the bucket (config/<ver>/model.yaml)".to_owned(),
        false => format!("; declared for imports in the bucket: {}", declared.join(", ")),
    }
}

impl Classify for VersionError {
    fn kind(&self) -> ErrorKind {
        match self {
            VersionError::Unknown { .. } | VersionError::BadDeclaration { .. } => ErrorKind::InvalidInput,
            VersionError::Storage(e) => e.kind(),
        }
    }
}

/// The version `name` names: one this process knows, or one the bucket
/// declares for imports (made known from then on).
pub async fn resolve(bucket: &Bucket, name: &str) -> Result<ModelVer, VersionError> {
    if let Ok(known) = ModelVer::parse(name) {
        return Ok(known);
    }
    // A name that cannot be a version cannot be declared either; not a bucket read.
    if ModelVer::declare_check(name).is_ok() && read(bucket, name).await?.is_some() {
        return declare(name);
    }
    let declared = declared(bucket).await?.into_iter().filter_map(|d| d.version.ok()).map(|(v, _)| v.to_string());
    Err(VersionError::Unknown { unknown: UnknownVersion { name: name.to_owned() }, declared: declared.collect() })
}

/// The declaration of `model_ver`, if the bucket has one (imported versions
/// do, registered ones never may).
pub async fn declaration(bucket: &Bucket, model_ver: ModelVer) -> Result<Option<Declaration>, VersionError> {
    read(bucket, model_ver.name()).await
}

/// One `config/<ver>/model.yaml` of the bucket, as [`declared`] lists them.
#[derive(Debug)]
pub struct Declared {
    pub name: String,
    /// The version and its declaration, or why the file declares nothing.
    pub version: Result<(ModelVer, Declaration), VersionError>,
}

/// Every declaration in the bucket, by version name; each usable one's
/// version made known to the process.
pub async fn declared(bucket: &Bucket) -> Result<Vec<Declared>, StorageError> {
    let mut out = Vec::new();
    for name in bucket.list_folders(&layout::config_root()).await? {
        let version = match read(bucket, &name).await {
            Ok(Some(declaration)) => declare(&name).map(|v| (v, declaration)),
            Ok(None) => continue,
            Err(VersionError::Storage(e)) => return Err(e),
            Err(e) => Err(e),
        };
        out.push(Declared { name, version });
    }
    Ok(out)
}

/// Makes every usable declaration of the bucket known to the process, for
/// listings that walk every version; problems are logged, not raised.
pub async fn declare_all(bucket: &Bucket) {
    match declared(bucket).await {
        Ok(all) => {
            for declared in all {
                if let Err(e) = declared.version {
                    tracing::warn!(version = %declared.name, error = %e, "ignoring a model version declaration");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the bucket's model version declarations"),
    }
}

fn declare(name: &str) -> Result<ModelVer, VersionError> {
    ModelVer::declare(name).map_err(|e: DeclareError| VersionError::BadDeclaration {
        key: layout::declaration_key_of(name).map(|k| k.to_string()).unwrap_or_else(|_| name.to_owned()),
        reason: e.to_string(),
    })
}

/// Reads and checks `config/<name>/model.yaml`; `None` when there is none.
async fn read(bucket: &Bucket, name: &str) -> Result<Option<Declaration>, VersionError> {
    let Ok(key) = layout::declaration_key_of(name) else { return Ok(None) };
    let Some(bytes) = bucket.get_if_exists(&key).await? else { return Ok(None) };
    let bad = |reason: String| VersionError::BadDeclaration { key: key.to_string(), reason };
    let text = std::str::from_utf8(&bytes).map_err(|e| bad(format!("not UTF-8 text: {e}")))?;
    let declaration: Declaration = serde_norway::from_str(text).map_err(|e| bad(e.to_string()))?;
    Ok(Some(declaration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolve_against_the_build_then_the_buckets_declarations() {
        let bucket = Bucket::open("memory://").unwrap();
        assert_eq!(resolve(&bucket, "v1").await.unwrap().name(), "v1");
        let err = resolve(&bucket, "versions-test-xgb").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unknown model version \"versions-test-xgb\" (known: {}); no version is declared for imports in the bucket (config/<ver>/model.yaml)",
                crs_domain::models::known_versions().join(", ")
            )
        );
        let put = |name: &str, text: &str| {
            let key = layout::declaration_key_of(name).unwrap();
            let bucket = bucket.clone();
            let text = text.to_owned();
            async move { bucket.put(&key, text).await.unwrap() }
        };
        put("versions-test-xgb", "framework: xgboost\n").await;
        let version = resolve(&bucket, "versions-test-xgb").await.unwrap();
        assert!(version.is_imported());
        assert_eq!(declaration(&bucket, version).await.unwrap(), Some(Declaration { framework: Framework::Xgboost }));

        put("versions-test-bad", "framework: sklearn\n").await;
        let err = resolve(&bucket, "versions-test-bad").await.unwrap_err().to_string();
        assert!(err.starts_with("config/versions-test-bad/model.yaml: framework: unknown variant `sklearn`"), "{err}");
        put("v1", "framework: lightgbm\n").await;
        let listed = declared(&bucket).await.unwrap();
        let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["v1", "versions-test-bad", "versions-test-xgb"]);
        assert_eq!(
            listed[0].version.as_ref().unwrap_err().to_string(),
            "config/v1/model.yaml: model version v1 is trained by this build, not imported: an imported model needs a version name of its own"
        );
        let err = resolve(&bucket, "nope").await.unwrap_err().to_string();
        assert!(err.ends_with("; declared for imports in the bucket: versions-test-xgb"), "{err}");
        assert_eq!(resolve(&bucket, "../x").await.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
}
