//! What a scenario is: a name, the engines it applies to, and a function that
//! measures secbus and the raw engine in the same run and returns a [`Report`].

use std::path::PathBuf;

use futures::future::BoxFuture;
use secbus::Bus;
use serde::Serialize;
use serde_json::{Map, Value};

/// One benchmark scenario. New scenarios are one entry in [`super::SCENARIOS`].
pub(crate) struct Scenario {
    /// The name `--scenario` selects and the report carries.
    pub(crate) name: &'static str,
    /// One line for `--help` and the table.
    pub(crate) about: &'static str,
    /// Whether it runs on an engine (`memory`, `embedded`, `nats`, `redis`)
    /// when no `--scenario` is given.
    pub(crate) applies: fn(engine: &str) -> bool,
    /// Measures.
    pub(crate) run: fn(&Context) -> BoxFuture<'_, anyhow::Result<Report>>,
}

/// What every scenario gets: the bus URL, the engine, the sizes asked for.
#[derive(Debug)]
pub(crate) struct Context {
    /// The bus URL, with a temporary directory filled in for `embedded:`.
    pub(crate) url: String,
    /// The engine's short name, from the URL's scheme.
    pub(crate) engine: String,
    /// Events per measured run.
    pub(crate) events: usize,
    /// Publishing tasks of `publish_consume`.
    pub(crate) publishers: usize,
    /// Events per `publish_batch` call of `publish`; `None`: the engine's default.
    pub(crate) batch: Option<usize>,
    /// Signature checks per loop of `hot_path`.
    pub(crate) verifies: usize,
    /// Rounds of `hot_path`.
    pub(crate) rounds: usize,
    /// Where raw baselines may put files (removed afterwards).
    pub(crate) scratch: PathBuf,
    /// Sigma rule folders (`--rules`), for detect.sigma.
    pub(crate) rules: Vec<PathBuf>,
    /// Detection threads of detect.sigma's worker; `None`: one per core.
    pub(crate) detection_threads: Option<usize>,
}

impl Context {
    /// A bus for one scenario; the scenario closes it.
    pub(crate) async fn connect(&self) -> anyhow::Result<Bus> {
        Bus::connect(&self.url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", self.url))
    }
}

/// A bound a reported field should respect on this machine.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Target {
    /// The field it applies to.
    pub(crate) field: &'static str,
    /// At least this much, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) min: Option<f64>,
    /// At most this much, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max: Option<f64>,
}

impl Target {
    pub(crate) fn at_least(field: &'static str, min: f64) -> Self {
        Target {
            field,
            min: Some(min),
            max: None,
        }
    }

    pub(crate) fn at_most(field: &'static str, max: f64) -> Self {
        Target {
            field,
            min: None,
            max: Some(max),
        }
    }
}

/// One line of output: ours against raw, plus what is particular to the scenario.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) engine: String,
    /// Events (or operations) per measured run.
    pub(crate) events: u64,
    /// Through secbus.
    pub(crate) ours_per_s: f64,
    /// Through the engine used directly on the same payload; `None` when this
    /// engine has no raw baseline for the scenario yet.
    pub(crate) raw_per_s: Option<f64>,
    /// `ours_per_s / raw_per_s`.
    pub(crate) ratio: Option<f64>,
    /// Scenario-specific measurements.
    #[serde(flatten)]
    pub(crate) fields: Map<String, Value>,
    /// The bounds this machine should meet, by field.
    pub(crate) targets: Vec<Target>,
    /// Whether every target is met.
    pub(crate) meets_targets: bool,
}

impl Report {
    pub(crate) fn new(
        scenario: &'static str,
        engine: &str,
        events: u64,
        ours_per_s: f64,
        raw_per_s: Option<f64>,
    ) -> Self {
        Report {
            scenario,
            engine: engine.to_owned(),
            events,
            ours_per_s: ours_per_s.round(),
            raw_per_s: raw_per_s.map(f64::round),
            ratio: raw_per_s.map(|raw| round3(ours_per_s / raw)),
            fields: Map::new(),
            targets: Vec::new(),
            meets_targets: true,
        }
    }

    /// Adds a scenario-specific field.
    pub(crate) fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Adds targets and works out whether they are met.
    pub(crate) fn targets(mut self, targets: impl IntoIterator<Item = Target>) -> Self {
        self.targets.extend(targets);
        let json = serde_json::to_value(&self).unwrap_or_default();
        self.meets_targets = self.targets.iter().all(|t| {
            json.get(t.field)
                .and_then(Value::as_f64)
                .is_some_and(|v| t.min.is_none_or(|m| v >= m) && t.max.is_none_or(|m| v <= m))
        });
        self
    }
}

/// Rounds to three decimals, enough for ratios and microseconds.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Rounds to six decimals, enough for seconds.
pub(crate) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
