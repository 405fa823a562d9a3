//! Blacklist import: CSV objects under a prefix, streamed line by line
//! from the object store into a [`BlacklistSink`] in batches, then swapped
//! in at once.
//!
//! # Format
//! One entry per line; the first field (separated by `,`, `;` or a tab,
//! optionally in double quotes) is the number, further fields are ignored.
//! A number ending in `*` is a prefix (`+4479*` refuses every number that
//! starts with 4479). Numbers are normalised to E.164 digits
//! ([`normalize_e164`]). Empty lines and lines starting with `#` are
//! skipped, and so is a first line whose first field has no digit (a
//! header). Any other line that does not normalise is malformed: counted,
//! reported with its object and line number, and skipped.

use crate::ArchiveError;
use crate::store::ObjectStore;
use futures::StreamExt;
use smsgw_core::policy::{BlacklistSink, normalize_e164};
pub use smsgw_core::policy::{LoadReport, MalformedLine};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Where one blacklist comes from.
#[derive(Clone)]
pub struct BlacklistSource {
    /// List name, as ContactPolicies reference it.
    pub name: String,
    /// Bucket (or directory) holding the files.
    pub store: Arc<dyn ObjectStore>,
    /// Key prefix of the list's CSV files; every object under it is read,
    /// in key order.
    pub prefix: String,
}

/// How lines are read.
///
/// # Defaults
/// No default country, batches of 10 000 entries, first 20 malformed
/// lines reported, lines up to 1 KiB.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Country code replacing a national trunk `0` (`"33"`); `None` means
    /// such numbers are malformed unless international.
    pub default_country: Option<String>,
    /// Entries sent to the sink per batch.
    pub batch: usize,
    /// Malformed lines reported in detail (all are counted).
    pub report_malformed: usize,
    /// Longest line accepted; longer ones are malformed.
    pub max_line: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            default_country: None,
            batch: 10_000,
            report_malformed: 20,
            max_line: 1024,
        }
    }
}

enum Entry {
    Number(String),
    Prefix(String),
    Skip,
    Malformed,
}

fn parse_line(line: &[u8], first: bool, opts: &LoadOptions) -> Entry {
    if line.len() > opts.max_line {
        return Entry::Malformed;
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return Entry::Malformed;
    };
    let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if line.is_empty() || line.starts_with('#') {
        return Entry::Skip;
    }
    let field = line
        .split([',', ';', '\t'])
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .trim();
    if first && !field.bytes().any(|b| b.is_ascii_digit()) {
        return Entry::Skip; // header
    }
    if let Some(p) = field.strip_suffix('*') {
        let p = p.trim();
        let digits = p
            .strip_prefix('+')
            .or_else(|| p.strip_prefix("00"))
            .unwrap_or(p);
        return if !digits.is_empty()
            && digits.len() <= 15
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            Entry::Prefix(digits.to_owned())
        } else {
            Entry::Malformed
        };
    }
    match normalize_e164(field, opts.default_country.as_deref()) {
        Some(n) => Entry::Number(n),
        None => Entry::Malformed,
    }
}

#[derive(Default)]
struct Batch {
    numbers: Vec<String>,
    prefixes: Vec<String>,
}

impl Batch {
    fn len(&self) -> usize {
        self.numbers.len() + self.prefixes.len()
    }

    async fn flush(
        &mut self,
        load: &mut dyn smsgw_core::policy::BlacklistLoad,
        report: &mut LoadReport,
    ) -> Result<(), ArchiveError> {
        if self.len() == 0 {
            return Ok(());
        }
        report.numbers += self.numbers.len() as u64;
        report.prefixes += self.prefixes.len() as u64;
        load.add(&self.numbers, &self.prefixes)
            .await
            .map_err(ArchiveError::Sink)?;
        self.numbers.clear();
        self.prefixes.clear();
        Ok(())
    }
}

/// Splits an object's chunks into lines; holds at most one partial line.
struct LineReader<'a> {
    object: &'a str,
    opts: &'a LoadOptions,
    pending: Vec<u8>,
    line_no: u64,
    /// Inside an over-long line already counted as malformed.
    skipping: bool,
}

impl<'a> LineReader<'a> {
    fn new(object: &'a str, opts: &'a LoadOptions) -> Self {
        Self {
            object,
            opts,
            pending: Vec::with_capacity(4096),
            line_no: 0,
            skipping: false,
        }
    }

    fn feed(&mut self, mut chunk: &[u8], batch: &mut Batch, report: &mut LoadReport) {
        if self.skipping {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.skipping = false;
                    chunk = &chunk[i + 1..];
                }
                None => return,
            }
        }
        let mut rest = chunk;
        if !self.pending.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&rest[..i]);
                    let line = std::mem::take(&mut self.pending);
                    self.line(&line, batch, report);
                    self.pending = line;
                    self.pending.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    self.check_overlong(report);
                    return;
                }
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.line(&rest[..i], batch, report);
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        self.check_overlong(report);
    }

    fn check_overlong(&mut self, report: &mut LoadReport) {
        if self.pending.len() > self.opts.max_line {
            let line = std::mem::take(&mut self.pending);
            self.line_no += 1;
            self.malformed(&line, report);
            self.skipping = true;
        }
    }

    fn finish(&mut self, batch: &mut Batch, report: &mut LoadReport) {
        if !self.pending.is_empty() && !self.skipping {
            let line = std::mem::take(&mut self.pending);
            self.line(&line, batch, report);
        }
    }

    fn line(&mut self, line: &[u8], batch: &mut Batch, report: &mut LoadReport) {
        self.line_no += 1;
        match parse_line(line, self.line_no == 1, self.opts) {
            Entry::Number(n) => batch.numbers.push(n),
            Entry::Prefix(p) => batch.prefixes.push(p),
            Entry::Skip => {}
            Entry::Malformed => self.malformed(line, report),
        }
    }

    fn malformed(&self, line: &[u8], report: &mut LoadReport) {
        report.malformed += 1;
        if report.malformed_lines.len() < self.opts.report_malformed {
            let text = String::from_utf8_lossy(&line[..line.len().min(256)]);
            report.malformed_lines.push(MalformedLine {
                object: self.object.to_owned(),
                line: self.line_no,
                content: text.trim_end().chars().take(64).collect(),
            });
        }
    }
}

/// Loads list `source` into `sink`: every object under the prefix is
/// streamed (memory stays bounded by one batch and one chunk whatever the
/// size), then the new list replaces the old one in one step. On an error
/// from the store or the sink the old list stays in force.
pub async fn load_blacklist(
    source: &BlacklistSource,
    sink: &dyn BlacklistSink,
    opts: &LoadOptions,
) -> Result<LoadReport, ArchiveError> {
    let started = Instant::now();
    let mut report = LoadReport {
        list: source.name.clone(),
        ..LoadReport::default()
    };
    let keys = source.store.list(&source.prefix).await?;
    let mut load = sink.begin(&source.name).await.map_err(ArchiveError::Sink)?;
    let mut batch = Batch::default();
    for key in keys {
        if key.ends_with('/') {
            continue;
        }
        report.objects += 1;
        let mut body = source.store.get(&key).await?;
        let mut reader = LineReader::new(&key, opts);
        loop {
            let Some(chunk) = body.next().await else {
                reader.finish(&mut batch, &mut report);
                break;
            };
            reader.feed(&chunk?, &mut batch, &mut report);
            if batch.len() >= opts.batch {
                batch.flush(load.as_mut(), &mut report).await?;
            }
        }
        report.lines += reader.line_no;
    }
    batch.flush(load.as_mut(), &mut report).await?;
    load.commit().await.map_err(ArchiveError::Sink)?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        list = %report.list,
        objects = report.objects,
        lines = report.lines,
        numbers = report.numbers,
        prefixes = report.prefixes,
        malformed = report.malformed,
        elapsed_ms = report.elapsed_ms,
        "blacklist loaded"
    );
    Ok(report)
}

/// The configured blacklists, loaded on a schedule and on demand (the
/// admin API calls [`BlacklistImporter::load`]). Loads of one list never
/// overlap.
pub struct BlacklistImporter {
    sources: HashMap<String, BlacklistSource>,
    sink: Arc<dyn BlacklistSink>,
    options: LoadOptions,
    locks: HashMap<String, Mutex<()>>,
    last: std::sync::Mutex<HashMap<String, Result<LoadReport, String>>>,
}

impl BlacklistImporter {
    /// An importer of `sources` into `sink`.
    pub fn new(
        sources: Vec<BlacklistSource>,
        sink: Arc<dyn BlacklistSink>,
        options: LoadOptions,
    ) -> Self {
        let locks = sources
            .iter()
            .map(|s| (s.name.clone(), Mutex::new(())))
            .collect();
        Self {
            sources: sources.into_iter().map(|s| (s.name.clone(), s)).collect(),
            sink,
            options,
            locks,
            last: Default::default(),
        }
    }

    /// Names of the configured lists.
    pub fn lists(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Loads one list now (waits for a load of it in progress to end).
    pub async fn load(&self, name: &str) -> Result<LoadReport, ArchiveError> {
        let (Some(source), Some(lock)) = (self.sources.get(name), self.locks.get(name)) else {
            return Err(ArchiveError::UnknownList(name.to_owned()));
        };
        let _guard = lock.lock().await;
        let result = load_blacklist(source, self.sink.as_ref(), &self.options).await;
        if let Err(e) = &result {
            tracing::warn!(list = name, error = %e, "blacklist load failed; the previous list stays in force");
        }
        self.last.lock().unwrap_or_else(|e| e.into_inner()).insert(
            name.to_owned(),
            result
                .as_ref()
                .map(Clone::clone)
                .map_err(ToString::to_string),
        );
        result
    }

    /// The outcome of each list's latest load.
    pub fn last_reports(&self) -> HashMap<String, Result<LoadReport, String>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads every list now, then every `interval`, until `cancel`.
    pub async fn run(&self, interval: Duration, cancel: tokio_util::sync::CancellationToken) {
        loop {
            for name in self.sources.keys() {
                if cancel.is_cancelled() {
                    return;
                }
                let _ = self.load(name).await;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl smsgw_core::policy::BlacklistReloader for BlacklistImporter {
    fn lists(&self) -> Vec<String> {
        let mut names: Vec<String> = self.sources.keys().cloned().collect();
        names.sort();
        names
    }

    async fn reload(&self, name: &str) -> Result<LoadReport, smsgw_core::policy::ReloadError> {
        use smsgw_core::policy::ReloadError;
        self.load(name).await.map_err(|e| match e {
            ArchiveError::UnknownList(n) => ReloadError::UnknownList(n),
            other => ReloadError::Failed(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, first: bool) -> Option<String> {
        match parse_line(s.as_bytes(), first, &LoadOptions::default()) {
            Entry::Number(n) => Some(format!("n{n}")),
            Entry::Prefix(p) => Some(format!("p{p}")),
            Entry::Skip => Some("skip".into()),
            Entry::Malformed => None,
        }
    }

    #[test]
    fn lines_should_parse_as_numbers_prefixes_headers_or_malformed() {
        assert_eq!(parse("number,reason", true).as_deref(), Some("skip"));
        assert_eq!(parse("number,reason", false), None);
        assert_eq!(
            parse("+33 6 12 34 56 78,opt-out\r", false).as_deref(),
            Some("n33612345678")
        );
        assert_eq!(
            parse("\"0033612345678\";x", false).as_deref(),
            Some("n33612345678")
        );
        assert_eq!(parse("+4479*", false).as_deref(), Some("p4479"));
        assert_eq!(parse("  ", false).as_deref(), Some("skip"));
        assert_eq!(parse("# comment", false).as_deref(), Some("skip"));
        assert_eq!(parse("12x45", false), None);
        assert_eq!(parse("*", false), None);
    }
}
