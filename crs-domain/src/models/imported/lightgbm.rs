//! lightgbm's text model file (`Booster.save_model("m.txt")`): a header of
//! `key=value` lines, then one block per tree (`Tree=<i>`) whose internal nodes
//! are numbered from 0 (the root) and whose leaves are written as negative
//! children (`-1` is leaf 0), then `end of trees` and the parameters.

use std::collections::HashMap;

use super::{Framework, ImportError, Parsed, Rule, Source, SourceNode, SourceTree};
use crate::models::forest::{Link, Precision};

const SUPPORTED: &str = "v4, written by lightgbm 4.x";
const OBJECTIVES: &str = "binary, cross_entropy, regression";

/// Bits of a split's `decision_type`.
const CATEGORICAL: u8 = 1;
const DEFAULT_LEFT: u8 = 2;
/// `(decision_type >> 2) & 3`: what counts as missing.
const MISSING_ZERO: u8 = 1;

/// `key=value` lines of one section, and the bare words (`average_output`).
struct Section<'a> {
    values: HashMap<&'a str, &'a str>,
    words: Vec<&'a str>,
}

impl<'a> Section<'a> {
    fn read(lines: &[&'a str]) -> Self {
        let mut values = HashMap::new();
        let mut words = Vec::new();
        for line in lines {
            match line.split_once('=') {
                Some((key, value)) => {
                    values.insert(key.trim(), value.trim());
                }
                None if !line.trim().is_empty() => words.push(line.trim()),
                None => {}
            }
        }
        Section { values, words }
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.values.get(key).copied()
    }
}

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, ImportError> {
    let unreadable = |reason: String| ImportError::Unreadable { framework: Framework::Lightgbm, reason };
    let text = std::str::from_utf8(bytes).map_err(|e| unreadable(format!("not UTF-8 text: {e}")))?;
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    if lines.first().map(|l| l.trim()) != Some("tree") {
        return Err(unreadable("the first line is not \"tree\"".to_owned()));
    }
    let first_tree = lines.iter().position(|l| l.starts_with("Tree=")).unwrap_or(lines.len());
    let header = Section::read(&lines[1..first_tree]);
    // The version first: a layout this build does not know must not be misread.
    let version = header.get("version").ok_or_else(|| unreadable("no version= line".to_owned()))?;
    if version != "v4" {
        let found = version.to_owned();
        return Err(ImportError::FormatVersion { framework: Framework::Lightgbm, found, supported: SUPPORTED });
    }

    let objective_line = header.get("objective").unwrap_or("").to_owned();
    let mut words = objective_line.split_whitespace();
    let objective = words.next().unwrap_or("").to_owned();
    let options: HashMap<&str, &str> = words.filter_map(|w| w.split_once(':')).collect();
    let bare: Vec<&str> = objective_line.split_whitespace().skip(1).filter(|w| !w.contains(':')).collect();
    match objective.as_str() {
        "multiclass" | "multiclassova" => return Err(ImportError::MultiClassObjective { objective: objective_line }),
        "lambdarank" | "rank_xendcg" => return Err(ImportError::Ranking { objective: objective_line }),
        _ => {}
    }
    let number = |key: &str| -> Result<usize, ImportError> {
        header.get(key).map_or(Ok(1), |v| v.parse().map_err(|_| unreadable(format!("{key}={v} is not a count"))))
    };
    let classes = number("num_class")?.max(number("num_tree_per_iteration")?);
    if classes > 1 {
        return Err(ImportError::MultiClass { classes });
    }
    let sigmoid = match options.get("sigmoid") {
        Some(s) => s.parse::<f64>().map_err(|_| unreadable(format!("objective {objective_line}: sigmoid {s}")))?,
        None => 1.0,
    };
    let link = match (objective.as_str(), bare.as_slice()) {
        ("binary" | "cross_entropy", []) => Link::Logistic,
        ("regression", []) => Link::ClipToUnit,
        _ => {
            return Err(ImportError::Objective {
                framework: Framework::Lightgbm,
                objective: objective_line,
                supported: OBJECTIVES,
            });
        }
    };
    // binary predicts 1 / (1 + exp(-sigmoid * score)): the scale goes into the leaves.
    let scale = if objective == "binary" { sigmoid } else { 1.0 };
    if !(scale.is_finite() && scale > 0.0) {
        return Err(unreadable(format!("objective {objective_line}: sigmoid must be a positive number")));
    }
    if header.words.contains(&"average_output") {
        return Err(ImportError::AverageOutput);
    }

    let feature_names: Vec<String> =
        header.get("feature_names").unwrap_or("").split_whitespace().map(str::to_owned).collect();
    let defaults = feature_names.iter().enumerate().all(|(i, name)| *name == format!("Column_{i}"));
    if feature_names.is_empty() || defaults {
        return Err(ImportError::NoFeatureNames);
    }
    let width = feature_names.len();
    if let Some(max) = header.get("max_feature_idx")
        && max.parse::<usize>().ok() != Some(width - 1)
    {
        return Err(unreadable(format!("max_feature_idx={max} but {width} feature names")));
    }

    let end = lines.iter().position(|l| l.trim() == "end of trees").unwrap_or(lines.len());
    let mut trees = Vec::new();
    let mut start = first_tree;
    while start < end {
        let next = lines[start + 1..end].iter().position(|l| l.starts_with("Tree=")).map_or(end, |p| start + 1 + p);
        let t = trees.len();
        let section = Section::read(&lines[start + 1..next]);
        trees.push(tree(t, &section, width, scale)?);
        start = next;
    }
    Ok(Parsed {
        feature_names,
        trees,
        base_score: 0.0,
        precision: Precision::F64,
        link,
        source: Source {
            framework: Framework::Lightgbm,
            format: version.to_owned(),
            encoding: "text".to_owned(),
            objective: objective_line,
            base_score: None,
            trees: 0,
            max_depth: 0,
            feature_names: Vec::new(),
        },
    })
}

/// One `Tree=` block as a source tree: internal node `i` is node `i`, leaf `j`
/// node `num_leaves - 1 + j`.
fn tree(t: usize, section: &Section<'_>, width: usize, scale: f64) -> Result<SourceTree, ImportError> {
    let problem = |problem: String| ImportError::Tree { tree: t, problem };
    let list = |key: &str| -> Vec<&str> { section.get(key).unwrap_or("").split_whitespace().collect() };
    let numbers = |key: &str| -> Result<Vec<f64>, ImportError> {
        list(key).iter().map(|v| v.parse::<f64>().map_err(|_| problem(format!("{key}: {v} is not a number")))).collect()
    };
    let integers = |key: &str| -> Result<Vec<i64>, ImportError> {
        list(key)
            .iter()
            .map(|v| v.parse::<i64>().map_err(|_| problem(format!("{key}: {v} is not an integer"))))
            .collect()
    };
    if section.get("is_linear").is_some_and(|v| v != "0") {
        return Err(ImportError::LinearTree { tree: t });
    }
    let leaves: usize = section
        .get("num_leaves")
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| problem("no num_leaves".to_owned()))?;
    let leaf_values = numbers("leaf_value")?;
    if leaf_values.len() != leaves {
        return Err(problem(format!("num_leaves={leaves} but {} leaf values", leaf_values.len())));
    }
    let internal = leaves - 1;
    let features = integers("split_feature")?;
    let gains = numbers("split_gain")?;
    let thresholds = numbers("threshold")?;
    let kinds = integers("decision_type")?;
    let lefts = integers("left_child")?;
    let rights = integers("right_child")?;
    for (key, len) in [
        ("split_feature", features.len()),
        ("threshold", thresholds.len()),
        ("decision_type", kinds.len()),
        ("left_child", lefts.len()),
        ("right_child", rights.len()),
    ] {
        if len != internal {
            return Err(problem(format!("{internal} splits but {len} entries in {key}")));
        }
    }
    let child = |c: i64| -> Result<usize, ImportError> {
        let at = if c < 0 { internal as i64 + !c } else { c };
        usize::try_from(at)
            .ok()
            .filter(|&at| at < internal + leaves)
            .ok_or_else(|| problem(format!("child {c} is outside the tree")))
    };
    let mut nodes = Vec::with_capacity(internal + leaves);
    for i in 0..internal {
        let kind = u8::try_from(kinds[i]).map_err(|_| problem(format!("decision_type {} of node {i}", kinds[i])))?;
        if kind & CATEGORICAL != 0 {
            return Err(ImportError::CategoricalSplit { tree: t, node: i });
        }
        let feature = usize::try_from(features[i])
            .ok()
            .filter(|&f| f < width)
            .ok_or_else(|| problem(format!("node {i} splits on feature {} of {width}", features[i])))?;
        let threshold = thresholds[i];
        let rule = if (kind >> 2) & 3 == MISSING_ZERO {
            Rule::ZeroDefault { threshold, default_left: kind & DEFAULT_LEFT != 0 }
        } else {
            Rule::LeftAtMost(threshold)
        };
        let gain = gains.get(i).copied().unwrap_or(0.0);
        nodes.push(SourceNode::Split { feature, rule, left: child(lefts[i])?, right: child(rights[i])?, gain });
    }
    if section.get("num_cat").is_some_and(|v| v != "0") {
        return Err(ImportError::CategoricalSplit { tree: t, node: 0 });
    }
    nodes.extend(leaf_values.into_iter().map(|value| SourceNode::Leaf { value: value * scale }));
    Ok(SourceTree { nodes })
}
