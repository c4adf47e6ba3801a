//! Scraping a service's `/metrics` and reading it back: a strict reader of the
//! OpenMetrics text the services write, so a malformed line fails the test.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample: its name, labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: the families' types and every sample.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// The value of `name` with exactly these labels, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
    }

    /// `get`, with 0 for a series that does not exist yet.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample of `name`.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// GET http://addr/metrics: the status line's code, the content type and the body.
pub async fn scrape(addr: SocketAddr) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics port");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    // The body may be chunked; the services send it whole, with a length.
    (status, content_type, body.to_owned())
}

/// Parses OpenMetrics text, panicking at the first line that is not well formed.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut metrics = Metrics::default();
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "text after # EOF: {line:?}");
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad metric name in {line:?}");
            match keyword {
                "TYPE" => {
                    let kind = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown", "summary", "stateset", "gaugehistogram"]
                            .contains(&kind),
                        "bad type in {line:?}"
                    );
                    metrics.types.insert(name.to_owned(), kind.to_owned());
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        metrics.samples.push(sample(line));
    }
    assert!(ended, "the exposition does not end with # EOF");
    for s in &metrics.samples {
        let family = ["_total", "_bucket", "_count", "_sum", "_created", "_info"]
            .iter()
            .find_map(|suffix| s.name.strip_suffix(suffix).filter(|f| metrics.types.contains_key(*f)))
            .unwrap_or(&s.name);
        assert!(metrics.types.contains_key(family), "sample {} has no # TYPE", s.name);
    }
    metrics
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sample(line: &str) -> Sample {
    let (name_end, labels, rest) = match line.find(['{', ' ']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let (labels, after) = label_set(&line[i + 1..], line);
            (i, labels, after)
        }
        Some(i) => (i, BTreeMap::new(), &line[i..]),
        None => panic!("sample without a value: {line:?}"),
    };
    let name = &line[..name_end];
    assert!(valid_name(name), "bad sample name in {line:?}");
    let value = rest.trim_start().split(' ').next().unwrap_or("");
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample { name: name.to_owned(), labels, value }
}

/// `k="v",...}` and the rest of the line.
fn label_set<'a>(mut text: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = text.strip_prefix('}') {
            return (labels, rest);
        }
        let (key, rest) = text.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(valid_name(key), "bad label name in {line:?}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.insert(key.to_owned(), value);
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}
