//! xgboost's model file (`Booster.save_model("m.json")`, or `"m.ubj"` for its
//! UBJSON twin): the learner's parameters, objective and feature names, and per
//! tree the parallel arrays of its nodes. xgboost writes non-finite floats as
//! the bare words `NaN`, `Infinity` and `-Infinity`, which JSON lacks: they are
//! read as the strings of those names (UBJSON's non-finite floats too), so that
//! a non-finite threshold is refused by name rather than as unreadable JSON.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Framework, ImportError, Parsed, Rule, Source, SourceNode, SourceTree, ubjson};
use crate::models::forest::{Link, Precision};

const SUPPORTED: &str = "xgboost 2.x and 3.x JSON or UBJSON";
const OBJECTIVES: &str = "binary:logistic, reg:logistic, reg:squarederror";

#[derive(Deserialize)]
struct File {
    learner: Learner,
    version: Vec<u64>,
}

#[derive(Deserialize)]
struct Learner {
    #[serde(default)]
    feature_names: Vec<String>,
    #[serde(default)]
    feature_types: Vec<String>,
    gradient_booster: GradientBooster,
    learner_model_param: ModelParam,
    objective: Objective,
}

#[derive(Deserialize)]
struct GradientBooster {
    name: String,
    /// Read once the booster is known to be gbtree: gblinear's has no trees.
    #[serde(default)]
    model: Option<Value>,
}

#[derive(Deserialize)]
struct GbtreeModel {
    trees: Vec<XgbTree>,
    #[serde(default)]
    tree_info: Vec<i64>,
}

#[derive(Deserialize)]
struct ModelParam {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct Objective {
    name: String,
}

#[derive(Deserialize)]
struct XgbTree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    #[serde(deserialize_with = "floats")]
    split_conditions: Vec<f64>,
    #[serde(default)]
    split_type: Vec<i64>,
    #[serde(default, deserialize_with = "floats")]
    loss_changes: Vec<f64>,
    #[serde(default)]
    categories_nodes: Vec<i64>,
    tree_param: TreeParam,
}

#[derive(Deserialize)]
struct TreeParam {
    #[serde(default)]
    size_leaf_vector: Option<String>,
}

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, ImportError> {
    let unreadable = |reason: String| ImportError::Unreadable { framework: Framework::Xgboost, reason };
    let (value, encoding): (Value, &str) = match serde_json::from_slice(&quote_non_finite(bytes)) {
        Ok(value) => (value, "json"),
        Err(json_error) => match ubjson::looks_like(bytes) {
            true => (ubjson::decode(bytes).map_err(|e| unreadable(format!("UBJSON: {e}")))?, "ubjson"),
            false => return Err(unreadable(format!("JSON: {json_error}"))),
        },
    };
    // The version first: a layout this build does not know must not be misread.
    let version: Vec<u64> = value
        .get("version")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| unreadable("no \"version\" of the writing xgboost".to_owned()))?;
    let format = version.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
    if !matches!(version.first(), Some(2 | 3)) {
        return Err(ImportError::FormatVersion { framework: Framework::Xgboost, found: format, supported: SUPPORTED });
    }
    let file: File = serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
    debug_assert_eq!(file.version, version);
    let learner = file.learner;

    let objective = learner.objective.name;
    if objective.starts_with("multi:") {
        return Err(ImportError::MultiClassObjective { objective });
    }
    if objective.starts_with("rank:") {
        return Err(ImportError::Ranking { objective });
    }
    let count = |text: &Option<String>| text.as_deref().map_or(Ok(0), str::parse::<usize>);
    let classes = count(&learner.learner_model_param.num_class).map_err(|e| unreadable(format!("num_class: {e}")))?;
    if classes > 1 {
        return Err(ImportError::MultiClass { classes });
    }
    let targets = count(&learner.learner_model_param.num_target).map_err(|e| unreadable(format!("num_target: {e}")))?;
    if targets > 1 {
        return Err(ImportError::MultiTarget { targets });
    }
    let logistic = match objective.as_str() {
        "binary:logistic" | "reg:logistic" => true,
        "reg:squarederror" => false,
        _ => return Err(ImportError::Objective { framework: Framework::Xgboost, objective, supported: OBJECTIVES }),
    };
    if learner.gradient_booster.name != "gbtree" {
        return Err(ImportError::Booster { booster: learner.gradient_booster.name });
    }
    if learner.feature_names.is_empty() {
        return Err(ImportError::NoFeatureNames);
    }
    if let Some(index) = learner.feature_types.iter().position(|t| t == "c") {
        return Err(ImportError::CategoricalFeature { index, name: learner.feature_names[index].clone() });
    }

    // 3.x writes "[5E-1]" (one per target), 2.x "5E-1": a float32 either way.
    let stored = learner.learner_model_param.base_score;
    let base = stored
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<f32>()
        .map_err(|_| ImportError::BaseScore(stored.clone()))?;
    // As xgboost's ProbToMargin, in float32.
    let margin = if logistic { -(1.0f32 / base - 1.0).ln() } else { base };
    if !margin.is_finite() {
        return Err(ImportError::BaseScore(stored));
    }

    let model = learner.gradient_booster.model.ok_or_else(|| unreadable("the booster has no model".to_owned()))?;
    let model: GbtreeModel = serde_json::from_value(model).map_err(|e| unreadable(format!("gbtree model: {e}")))?;
    if model.tree_info.iter().any(|&group| group != 0) {
        return Err(ImportError::MultiClass { classes: model.tree_info.iter().max().map_or(0, |&g| g as usize + 1) });
    }
    let width = learner.feature_names.len();
    let trees = model.trees.iter().enumerate().map(|(t, tree)| convert(t, tree, width)).collect::<Result<_, _>>()?;
    Ok(Parsed {
        feature_names: learner.feature_names,
        trees,
        base_score: f64::from(margin),
        precision: Precision::F32,
        link: if logistic { Link::Logistic } else { Link::ClipToUnit },
        source: Source {
            framework: Framework::Xgboost,
            format,
            encoding: encoding.to_owned(),
            objective,
            base_score: Some(stored),
            trees: 0,
            max_depth: 0,
            feature_names: Vec::new(),
        },
    })
}

fn convert(t: usize, tree: &XgbTree, width: usize) -> Result<SourceTree, ImportError> {
    let problem = |problem: String| ImportError::Tree { tree: t, problem };
    if tree.tree_param.size_leaf_vector.as_deref().is_some_and(|s| s != "0" && s != "1") {
        return Err(ImportError::MultiTarget {
            targets: tree.tree_param.size_leaf_vector.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
        });
    }
    let n = tree.left_children.len();
    for (name, len) in [
        ("right_children", tree.right_children.len()),
        ("split_indices", tree.split_indices.len()),
        ("split_conditions", tree.split_conditions.len()),
    ] {
        if len != n {
            return Err(problem(format!("left_children has {n} entries, {name} {len}")));
        }
    }
    if let Some(&node) = tree.categories_nodes.first() {
        return Err(ImportError::CategoricalSplit { tree: t, node: node.max(0) as usize });
    }
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        if tree.split_type.get(i).is_some_and(|&kind| kind != 0) {
            return Err(ImportError::CategoricalSplit { tree: t, node: i });
        }
        let (left, right) = (tree.left_children[i], tree.right_children[i]);
        // xgboost's floats are float32, written as the shortest decimal that
        // reads back as that float32 (UBJSON holds them exactly): rounding to
        // f32 recovers the model's own value from either encoding.
        let float32 = f64::from(tree.split_conditions[i] as f32);
        if left == -1 {
            nodes.push(SourceNode::Leaf { value: float32 });
            continue;
        }
        let child = |c: i64| usize::try_from(c).map_err(|_| problem(format!("node {i} has child {c}")));
        let feature = usize::try_from(tree.split_indices[i])
            .ok()
            .filter(|&f| f < width)
            .ok_or_else(|| problem(format!("node {i} splits on feature {} of {width}", tree.split_indices[i])))?;
        // A NaN stays NaN and is refused by name; an infinity stays infinite.
        let threshold = if tree.split_conditions[i].is_finite() { float32 } else { tree.split_conditions[i] };
        nodes.push(SourceNode::Split {
            feature,
            rule: Rule::LeftBelow(threshold),
            left: child(left)?,
            right: child(right)?,
            gain: tree.loss_changes.get(i).copied().unwrap_or(0.0),
        });
    }
    Ok(SourceTree { nodes })
}

/// The non-finite words xgboost writes, and what they stand for.
pub(super) const NON_FINITE: [(&str, f64); 3] =
    [("-Infinity", f64::NEG_INFINITY), ("Infinity", f64::INFINITY), ("NaN", f64::NAN)];

/// `bytes` with every bare `NaN`, `Infinity` and `-Infinity` outside a string
/// put in quotes; the bytes themselves when there is none.
fn quote_non_finite(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some((word, _)) = NON_FINITE.iter().find(|(word, _)| bytes[i..].starts_with(word.as_bytes())) {
            let out = out.get_or_insert_with(|| bytes[..i].to_vec());
            out.push(b'"');
            out.extend_from_slice(word.as_bytes());
            out.push(b'"');
            i += word.len();
            continue;
        }
        if let Some(out) = &mut out {
            out.push(b);
        }
        i += 1;
    }
    match out {
        Some(out) => Cow::Owned(out),
        None => Cow::Borrowed(bytes),
    }
}

/// Numbers, or the names of the non-finite ones.
fn floats<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Float {
        Number(f64),
        Word(String),
    }
    Vec::<Float>::deserialize(deserializer)?
        .into_iter()
        .map(|f| match f {
            Float::Number(x) => Ok(x),
            Float::Word(word) => NON_FINITE
                .iter()
                .find(|(name, _)| *name == word)
                .map(|&(_, x)| x)
                .ok_or_else(|| serde::de::Error::custom(format!("{word:?} is not a number"))),
        })
        .collect()
}
