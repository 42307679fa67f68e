//! Sigma rules read from folders: what loads, and for each file or document
//! that does not, why.

use std::path::{Path, PathBuf};

use rsigma_eval::{CorrelationConfig, CorrelationEngine};
use rsigma_parser::SigmaCollection;
use serde::Serialize;

use crate::error::{DetectError, Result};

/// The rules of some folders.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// Every rule, correlation and filter that parsed and compiled.
    pub collection: SigmaCollection,
    /// Rule documents that parsed and compiled (detection + correlation).
    pub loaded: usize,
    /// Each document or file that did not, with the reason.
    pub failures: Vec<RuleFailure>,
}

/// A rule that does not load.
#[derive(Debug, Clone, Serialize)]
pub struct RuleFailure {
    /// The file it is in.
    pub path: PathBuf,
    /// The parser's or compiler's reason.
    pub reason: String,
}

impl RuleSet {
    /// Reads every `*.yml` / `*.yaml` under `dirs` (recursively), in path order.
    pub fn load(dirs: &[PathBuf]) -> Result<RuleSet> {
        let mut files = Vec::new();
        for dir in dirs {
            if dir.is_file() {
                files.push(dir.clone());
            } else {
                collect(dir, &mut files)?;
            }
        }
        files.sort();
        let mut set = RuleSet::default();
        // A probe engine compiles each rule once, so a rule that parses but
        // cannot compile is reported here instead of failing the worker.
        let mut probe = CorrelationEngine::new(CorrelationConfig::default());
        let mut correlations = Vec::new();
        for path in files {
            let parsed = match rsigma_parser::parse_sigma_file(&path) {
                Ok(c) => c,
                Err(e) => {
                    set.failures.push(RuleFailure {
                        path,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            for reason in &parsed.errors {
                set.failures.push(RuleFailure {
                    path: path.clone(),
                    reason: reason.clone(),
                });
            }
            for rule in parsed.rules {
                match probe.add_rule(&rule) {
                    Ok(()) => {
                        set.loaded += 1;
                        set.collection.rules.push(rule);
                    }
                    Err(e) => set.failures.push(RuleFailure {
                        path: path.clone(),
                        reason: format!("{}: {e}", rule.title),
                    }),
                }
            }
            set.collection.filters.extend(parsed.filters);
            // Correlations refer to rules that may sit in later files: they
            // are checked once every file is read.
            correlations.extend(parsed.correlations.into_iter().map(|c| (path.clone(), c)));
        }
        for (path, corr) in correlations {
            match probe.add_correlation(&corr) {
                Ok(()) => {
                    set.loaded += 1;
                    set.collection.correlations.push(corr);
                }
                Err(e) => set.failures.push(RuleFailure {
                    path,
                    reason: format!("correlation {}: {e}", corr.title),
                }),
            }
        }
        Ok(set)
    }

    /// Share of documents that loaded, 0 to 1.
    pub fn loaded_share(&self) -> f64 {
        let total = self.loaded + self.failures.len();
        if total == 0 {
            0.0
        } else {
            self.loaded as f64 / total as f64
        }
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| DetectError::Rules(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            files.push(path);
        }
    }
    Ok(())
}
