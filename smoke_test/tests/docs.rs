//! The documentation's relative links lead somewhere: every `[text](path)` and
//! `[text](path#fragment)` in the repository's Markdown files names a file that
//! exists and, with a fragment, a heading of that file (as GitHub makes anchors
//! of headings). The README stays a first page: detail goes to `docs/`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

const README_MAX_LINES: usize = 250;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// Every Markdown file of the repository, leaving out build output and hidden folders.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, found);
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// The lines outside fenced code blocks, with their numbers (1 = the first line).
fn outside_fences(text: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// A line without its inline code spans, so that link syntax shown as code is not taken for a link.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation other than `-` and
/// `_` dropped, spaces turned into hyphens; a repeated anchor gets `-1`, `-2`, ...
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, line) in outside_fences(text) {
        // GitHub drops a code span's backticks from the anchor and keeps its text.
        let line = line.replace('`', "");
        let Some(heading) = line.strip_prefix('#') else { continue };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The targets of the inline links `[text](target)` and images `![alt](target)` in a line.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        targets.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        rest = &after[end..];
    }
    targets
}

#[test]
fn every_relative_link_in_the_documentation_resolves() {
    let root = repository();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(files.iter().any(|f| f.ends_with("docs/README.md")), "docs/README.md is missing");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a Markdown file");
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        for (number, line) in outside_fences(&text) {
            for target in link_targets(&without_code_spans(line)) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, fragment) = match target.split_once('#') {
                    Some((path, fragment)) => (path, Some(fragment)),
                    None => (target.as_str(), None),
                };
                let linked = if path.is_empty() { file.clone() } else { file.parent().expect("a folder").join(path) };
                if !linked.exists() {
                    broken.push(format!("{shown}:{number}: {target}: no such file"));
                    continue;
                }
                if let Some(fragment) = fragment {
                    let linked_text = std::fs::read_to_string(&linked).unwrap_or_default();
                    if !anchors(&linked_text).contains(fragment) {
                        broken.push(format!("{shown}:{number}: {target}: no heading with that anchor"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 50, "only {checked} relative links found; is the link syntax still read?");
}

#[test]
fn the_readme_stays_a_first_page() {
    let text = std::fs::read_to_string(repository().join("README.md")).expect("README.md");
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; at most {README_MAX_LINES}: move the detail to a page under docs/ and link it"
    );
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let text = "# Title\n## Crashes (kill -9)\n## Open Inference Protocol (KServe V2)\n```\n# not a heading\n```\n## `crctl` commands\n## Title\n";
    let made = anchors(text);
    for anchor in ["title", "crashes-kill--9", "open-inference-protocol-kserve-v2", "crctl-commands", "title-1"] {
        assert!(made.contains(anchor), "{anchor} missing from {made:?}");
    }
    assert!(!made.contains("not-a-heading"));
    assert_eq!(link_targets("see [a](x.md#b) and ![c](d.png) and [e](https://f)"), ["x.md#b", "d.png", "https://f"]);
    assert_eq!(link_targets(&without_code_spans("a `[not](a link)` and [b](c.md)")), ["c.md"]);
}
