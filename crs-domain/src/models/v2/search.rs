//! v2's hyperparameter search: folds grouped by keyword, every grid point
//! scored on them with early stopping (the record a run keeps of it is in `booster`).

use std::collections::HashSet;

use super::booster::{FoldScore, PointScore};
use super::forust::{Rows, fit_booster};
use super::params::{Params, Point};
use crate::models::{FitError, Progress};
use crate::rng::unit_hash;

/// Scores every grid point by cross-validation; returns the scores and the
/// index of the best (lowest mean validation log-loss, the first on ties).
pub(super) fn search(
    p: &Params,
    rows: &Rows,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<PointScore>, usize), FitError> {
    let fold_of = assign_folds(rows, p.folds, p.seed)?;
    let grid = p.grid();
    let mut scores: Vec<PointScore> = Vec::with_capacity(grid.len());
    let mut best: Option<usize> = None;
    for (i, point) in grid.iter().enumerate() {
        let curves = fold_curves(p, point, rows, &fold_of, &mut |fold, curve| {
            let (trees, logloss) = argmin(curve);
            progress(Progress::Fold {
                point: i + 1,
                points: grid.len(),
                fold: fold + 1,
                folds: p.folds,
                trees,
                logloss,
            })
        })?;
        // Folds stop at different lengths. A fold that stopped keeps its last
        // score: truncating all to the shortest would let one fold's early
        // stop cap every fold's tree count.
        let longest = curves.iter().map(Vec::len).max().unwrap_or(0);
        let at = |c: &Vec<f64>, t: usize| c[t.min(c.len() - 1)];
        let mean: Vec<f64> =
            (0..longest).map(|t| curves.iter().map(|c| at(c, t)).sum::<f64>() / curves.len() as f64).collect();
        let (trees, mean_logloss) = argmin(&mean);
        if !mean_logloss.is_finite() {
            return Err(FitError::Library(format!("grid point {} has a validation log-loss of {mean_logloss}", i + 1)));
        }
        let folds = curves
            .iter()
            .map(|c| FoldScore { trees_grown: c.len(), best_trees: argmin(c).0, logloss: at(c, trees - 1) })
            .collect();
        scores.push(PointScore { values: point.clone(), trees, mean_logloss, folds });
        if best.is_none_or(|b| mean_logloss < scores[b].mean_logloss) {
            best = Some(i);
        }
        let b = best.expect("set above");
        progress(Progress::Point {
            point: i + 1,
            points: grid.len(),
            trees,
            mean_logloss,
            best_point: b + 1,
            best_logloss: scores[b].mean_logloss,
        });
    }
    let chosen = best.ok_or_else(|| FitError::Search("the grid is empty".into()))?;
    Ok((scores, chosen))
}

/// The fold of each row: a hash of its keyword, so a keyword is in one fold.
fn assign_folds(rows: &Rows, folds: usize, seed: u64) -> Result<Vec<usize>, FitError> {
    let groups = &rows.data.groups;
    let keywords = groups.iter().collect::<HashSet<_>>().len();
    if keywords < folds {
        return Err(FitError::Search(format!(
            "{folds} folds need at least {folds} keywords, the training rows have {keywords}"
        )));
    }
    let fold_of: Vec<usize> =
        groups.iter().map(|&g| ((unit_hash(g as u64, seed) * folds as f64) as usize).min(folds - 1)).collect();
    let mut clicks = vec![0.0; folds];
    let mut conversions = vec![0.0; folds];
    for (r, &f) in fold_of.iter().enumerate() {
        clicks[f] += rows.data.clicks[r];
        conversions[f] += rows.data.conversions[r];
    }
    if let Some(f) = (0..folds).find(|&f| clicks[f] == 0.0) {
        return Err(FitError::Search(format!(
            "fold {} of {folds} got no keyword ({keywords} keywords); use fewer folds",
            f + 1
        )));
    }
    let total: f64 = conversions.iter().sum();
    if total == 0.0 {
        return Err(FitError::Search("the training rows have no conversions to learn from".into()));
    }
    if let Some(f) = (0..folds).find(|&f| conversions[f] == total) {
        return Err(FitError::Search(format!(
            "every conversion is in fold {} of {folds}, so the other folds' training parts have none; use fewer folds or more data",
            f + 1
        )));
    }
    Ok(fold_of)
}

/// The validation curve of every fold of `point`, in fold order, fitted on
/// parallel threads; `done` hears each fold as it finishes.
fn fold_curves(
    p: &Params,
    point: &Point,
    rows: &Rows,
    fold_of: &[usize],
    done: &mut dyn FnMut(usize, &[f64]),
) -> Result<Vec<Vec<f64>>, FitError> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(p.folds);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let send = send.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let fold = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if fold >= p.folds {
                        break;
                    }
                    let train: Vec<usize> = (0..rows.len()).filter(|&r| fold_of[r] != fold).collect();
                    let valid: Vec<usize> = (0..rows.len()).filter(|&r| fold_of[r] == fold).collect();
                    let curve = validation_curve(p, point, rows, &train, &valid);
                    let failed = curve.is_err();
                    // The receiver outlives the workers, so sending cannot fail.
                    let _ = send.send((fold, curve));
                    if failed {
                        break;
                    }
                }
            });
        }
        drop(send);
        let mut curves: Vec<Option<Vec<f64>>> = vec![None; p.folds];
        for (fold, curve) in receive {
            let curve = curve?;
            done(fold, &curve);
            curves[fold] = Some(curve);
        }
        curves.into_iter().map(|c| c.ok_or_else(|| FitError::Library("a fold did not finish".into()))).collect()
    })
}

/// Validation log-loss per click after each tree, up to where early stopping ended the fit.
fn validation_curve(
    p: &Params,
    point: &Point,
    rows: &Rows,
    train: &[usize],
    valid: &[usize],
) -> Result<Vec<f64>, FitError> {
    // One thread per fold: folds run side by side instead.
    let booster = fit_booster(p, point, rows, train, p.max_trees, Some(valid), false)?;
    let history = booster
        .evaluation_history
        .as_ref()
        .ok_or_else(|| FitError::Library("forust recorded no validation history".into()))?;
    let curve: Vec<f64> = (0..history.rows).map(|t| *history.get(t, 0)).collect();
    if curve.is_empty() {
        return Err(FitError::Library("forust grew no trees".into()));
    }
    Ok(curve)
}

/// (1-based position, value) of the smallest value; the first on ties.
fn argmin(values: &[f64]) -> (usize, f64) {
    let mut best = (1, f64::INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v < best.1 {
            best = (i + 1, v);
        }
    }
    if !best.1.is_finite() {
        best.1 = values.first().copied().unwrap_or(f64::NAN);
    }
    best
}
