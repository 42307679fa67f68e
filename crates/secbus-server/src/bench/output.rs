//! How reports are printed: one JSON object per line, or a table for people.

use std::io::Write;

use serde_json::Value;

use super::scenario::Report;

/// Prints reports as they come.
pub(crate) enum Output {
    /// One JSON object per line (`--json`).
    JsonLines,
    /// A table, its header printed before the first row.
    Table { header_printed: bool },
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        if json {
            Output::JsonLines
        } else {
            Output::Table {
                header_printed: false,
            }
        }
    }

    /// Whether progress lines may go to stderr (not when a machine reads stdout).
    pub(crate) fn chatty(&self) -> bool {
        matches!(self, Output::Table { .. })
    }

    pub(crate) fn emit(&mut self, report: &Report) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Output::JsonLines => {
                serde_json::to_writer(&mut out, report)?;
                writeln!(out)?;
            }
            Output::Table { header_printed } => {
                if !*header_printed {
                    writeln!(
                        out,
                        "{:<18} {:<9} {:>10} {:>14} {:>14} {:>7}  targets",
                        "scenario", "engine", "events", "ours/s", "raw/s", "ratio"
                    )?;
                    *header_printed = true;
                }
                let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".to_owned(), f);
                writeln!(
                    out,
                    "{:<18} {:<9} {:>10} {:>14} {:>14} {:>7}  {}",
                    report.scenario,
                    report.engine,
                    report.events,
                    thousands(report.ours_per_s),
                    opt(report.raw_per_s, thousands),
                    opt(report.ratio, |r| format!("{r:.3}")),
                    if report.targets.is_empty() {
                        "-"
                    } else if report.meets_targets {
                        "met"
                    } else {
                        "MISSED"
                    },
                )?;
                let fields: Vec<String> = report
                    .fields
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s:?}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                writeln!(out, "    {}", fields.join("  "))?;
            }
        }
        out.flush()
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if x < 0.0 {
        grouped.insert(0, '-');
    }
    grouped
}
