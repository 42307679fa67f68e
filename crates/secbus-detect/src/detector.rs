//! Sigma rules evaluated over secbus events: detection matches and
//! correlations, with correlation state kept apart per tenant and bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rsigma_eval::compiler::compile_rule;
use rsigma_eval::{
    CorrelationAction, CorrelationConfig, CorrelationEngine, CorrelationEventMode, Engine,
    JsonEvent, LogSourceExtractor, ResultBody,
};
use rsigma_parser::SigmaCollection;
use secbus::Event;

use crate::error::{DetectError, Result};
use crate::mapping::{CATEGORY_FIELD, Mapping, PRODUCT_FIELD, SERVICE_FIELD};
use crate::rules::RuleSet;

/// The group-by field every correlation gets, so that events of two tenants
/// never count toward one correlation.
const TENANT_FIELD: &str = "tenantid";

/// Bounds on correlation state.
#[derive(Debug, Clone, Copy)]
pub struct StateLimits {
    /// Correlation windows kept at most, over every rule, group and tenant;
    /// beyond it the oldest are evicted and `state_cap_hits` counts it.
    pub max_state_entries: usize,
    /// Contributing event ids kept per window (the finding lists them).
    pub max_contributing_events: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_state_entries: 100_000,
            max_contributing_events: 100,
        }
    }
}

/// The detection rules' matches on one event, before correlation.
#[derive(Debug)]
pub struct Detections(Vec<rsigma_eval::EvaluationResult>);

impl Detections {
    /// No detection rule matched.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a rule found on one event.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The rule's id, or its title when it has none.
    pub rule_id: String,
    /// The rule's title.
    pub title: String,
    /// The rule's description.
    pub description: Option<String>,
    /// informational, low, medium, high or critical.
    pub level: &'static str,
    /// The rule's tags (`attack.t1059.001`, ...).
    pub tags: Vec<String>,
    /// The logsource category of a detection rule.
    pub category: Option<String>,
    /// Set for a correlation rule.
    pub correlation: Option<CorrelationMatch>,
}

/// The correlation part of a finding.
#[derive(Debug, Clone)]
pub struct CorrelationMatch {
    /// event_count, value_count, temporal, ...
    pub kind: &'static str,
    /// The group the correlation counted in (tenantid included).
    pub group_by: Vec<(String, String)>,
    /// The window, in seconds.
    pub timespan_secs: u64,
    /// The count or value that met the condition.
    pub value: f64,
    /// The ids of the events that contributed, oldest first.
    pub event_ids: Vec<String>,
    /// Their times, epoch seconds, oldest first.
    pub first_secs: Option<i64>,
}

struct RuleInfo {
    description: Option<String>,
    category: Option<String>,
}

/// The detection rules, compiled once and shared. Evaluating them changes no
/// state, so any number of threads may run them at once, and they run beside
/// the correlation rules, which are apart from them (see [`Detector`]).
#[derive(Clone)]
pub struct DetectionRules(Arc<Engine>);

impl DetectionRules {
    /// The detection rules' matches on an event in Sigma shape.
    pub fn detect(&self, sigma: &serde_json::Value) -> Detections {
        Detections(self.0.evaluate(&JsonEvent::borrow(sigma)))
    }
}

/// The rules and their correlation state.
///
/// The detection rules and the correlation rules live in two rsigma engines:
/// every detection rule in a stateless [`Engine`] ([`DetectionRules`]), and
/// the correlation rules, with only the detection rules they refer to, in a
/// [`CorrelationEngine`] that is fed the detections. Apart, detection can run
/// on other threads while correlation runs, and the correlation engine, which
/// looks a detection's rule up in a list of its rules, searches a few instead
/// of the whole corpus.
pub struct Detector {
    rules: DetectionRules,
    engine: CorrelationEngine,
    mapping: Arc<Mapping>,
    info: HashMap<String, RuleInfo>,
    limits: StateLimits,
    state_cap_hits: AtomicU64,
    max_timespan_secs: u64,
    feeds_only: std::collections::HashSet<String>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("rules", &self.rule_count())
            .field("correlations", &self.engine.correlation_rule_count())
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector over `rules`, seeing events through `mapping`.
    pub fn new(rules: &RuleSet, mapping: Mapping, limits: StateLimits) -> Result<Detector> {
        let config = CorrelationConfig {
            max_state_entries: limits.max_state_entries,
            // One finding per threshold reached: the window starts again.
            action_on_match: CorrelationAction::Reset,
            // Rules that only feed correlations are filtered here (see
            // `feeds_only`): the engine's own filter matches ids only.
            emit_detections: true,
            correlation_event_mode: CorrelationEventMode::Refs,
            max_correlation_events: limits.max_contributing_events,
            ..CorrelationConfig::default()
        };
        let mut info = HashMap::new();
        let mut collection = rules.collection.clone();
        for rule in &collection.rules {
            let key = rule.id.clone().unwrap_or_else(|| rule.title.clone());
            info.insert(
                key,
                RuleInfo {
                    description: rule.description.clone(),
                    category: rule.logsource.category.clone(),
                },
            );
        }
        for corr in &mut collection.correlations {
            if !corr.group_by.iter().any(|g| g == TENANT_FIELD) {
                corr.group_by.push(TENANT_FIELD.to_owned());
            }
            let key = corr.id.clone().unwrap_or_else(|| corr.title.clone());
            info.insert(
                key,
                RuleInfo {
                    description: corr.description.clone(),
                    category: None,
                },
            );
        }
        // Rules a correlation refers to (by id or name) without `generate:
        // true` only feed it: alone they raise nothing.
        let mut referenced = std::collections::HashSet::new();
        for corr in &collection.correlations {
            if !corr.generate {
                referenced.extend(corr.rules.iter().cloned());
            }
        }
        let feeds_only = collection
            .rules
            .iter()
            .filter(|r| {
                r.id.as_ref().is_some_and(|id| referenced.contains(id))
                    || r.name.as_ref().is_some_and(|n| referenced.contains(n))
            })
            .map(|r| r.id.clone().unwrap_or_else(|| r.title.clone()))
            .collect();
        let rules = detection_engine(&collection)?;
        // The correlation engine gets the detection rules a correlation names
        // (by id or name), whether or not they also raise findings alone.
        let named: std::collections::HashSet<&String> = collection
            .correlations
            .iter()
            .flat_map(|c| c.rules.iter())
            .collect();
        let correlated = SigmaCollection {
            rules: collection
                .rules
                .iter()
                .filter(|r| r.id.iter().chain(r.name.iter()).any(|k| named.contains(k)))
                .cloned()
                .collect(),
            correlations: std::mem::take(&mut collection.correlations),
            filters: Vec::new(),
            errors: Vec::new(),
        };
        let mut engine = CorrelationEngine::new(config);
        engine
            .add_collection(&correlated)
            .map_err(|e| DetectError::Rules(e.to_string()))?;
        let max_timespan_secs = engine
            .introspect()
            .correlations
            .iter()
            .map(|c| c.timespan_secs)
            .max()
            .unwrap_or(0);
        Ok(Detector {
            rules,
            feeds_only,
            max_timespan_secs,
            engine,
            mapping: Arc::new(mapping),
            info,
            limits,
            state_cap_hits: AtomicU64::new(0),
        })
    }

    /// Detection rules loaded.
    pub fn rule_count(&self) -> usize {
        self.rules.0.rule_count()
    }

    /// Correlation rules loaded.
    pub fn correlation_count(&self) -> usize {
        self.engine.correlation_rule_count()
    }

    /// Correlation windows held now.
    pub fn state_entries(&self) -> usize {
        self.engine.state_count()
    }

    /// Times the state cap was reached (old windows were evicted).
    pub fn state_cap_hits(&self) -> u64 {
        self.state_cap_hits.load(Ordering::Relaxed)
    }

    /// The longest correlation window, in seconds: what a restart replays.
    pub fn max_timespan_secs(&self) -> u64 {
        self.max_timespan_secs
    }

    /// The event as the rules see it (mapping applied).
    pub fn sigma_event(&self, event: &Event) -> serde_json::Value {
        self.mapping.to_sigma(event)
    }

    /// The mapping, to put events in Sigma shape away from the detector (the
    /// worker maps on its detection threads while another correlates).
    pub fn mapping(&self) -> Arc<Mapping> {
        self.mapping.clone()
    }

    /// Evaluates `event` (at its `time`) and updates correlation state.
    pub fn process(&mut self, event: &Event) -> Vec<Finding> {
        let sigma = self.mapping.to_sigma(event);
        let at = event.time.unwrap_or_else(chrono::Utc::now).timestamp();
        self.process_sigma(&sigma, at)
    }

    /// Evaluates an event already in Sigma shape at `at` (epoch seconds).
    pub fn process_sigma(&mut self, sigma: &serde_json::Value, at: i64) -> Vec<Finding> {
        let detections = self.detect(sigma);
        self.correlate(sigma, detections, at)
    }

    /// The detection rules' matches on an event in Sigma shape. It changes no
    /// state, so several threads may run it at once on different events.
    pub fn detect(&self, sigma: &serde_json::Value) -> Detections {
        self.rules.detect(sigma)
    }

    /// The detection rules, to run away from the detector (on other threads,
    /// while it correlates).
    pub fn rules(&self) -> DetectionRules {
        self.rules.clone()
    }

    /// Feeds what [`Detector::detect`] found on `sigma` into the correlation
    /// rules at `at` (epoch seconds) and returns the findings. Events must come
    /// in the order they happened, as to [`Detector::process_sigma`].
    pub fn correlate(
        &mut self,
        sigma: &serde_json::Value,
        detections: Detections,
        at: i64,
    ) -> Vec<Finding> {
        let results =
            self.engine
                .process_with_detections(&JsonEvent::borrow(sigma), detections.0, at);
        if self.engine.state_count() >= self.limits.max_state_entries {
            self.state_cap_hits.fetch_add(1, Ordering::Relaxed);
        }
        results
            .into_iter()
            .filter_map(|r| {
                let key = r
                    .header
                    .rule_id
                    .clone()
                    .unwrap_or_else(|| r.header.rule_title.clone());
                if r.is_detection() && self.feeds_only.contains(&key) {
                    return None;
                }
                let info = self.info.get(&key);
                let correlation = match &r.body {
                    ResultBody::Detection(_) => None,
                    ResultBody::Correlation(c) => {
                        let refs = c.event_refs.clone().unwrap_or_default();
                        Some(CorrelationMatch {
                            kind: c.correlation_type.as_str(),
                            group_by: c.group_key.clone(),
                            timespan_secs: c.timespan_secs,
                            value: c.aggregated_value,
                            first_secs: refs.first().map(|e| e.timestamp),
                            event_ids: refs.into_iter().filter_map(|e| e.id).collect(),
                        })
                    }
                };
                Some(Finding {
                    rule_id: key.clone(),
                    title: r.header.rule_title.clone(),
                    description: info.and_then(|i| i.description.clone()),
                    level: r.header.level.map_or("medium", |l| l.as_str()),
                    tags: unique(&r.header.tags),
                    category: info.and_then(|i| i.category.clone()),
                    correlation,
                })
            })
            .collect()
    }
}

/// Every detection rule of `collection`, with its filters applied, compiled
/// as rsigma's correlation engine compiles them; events are matched only
/// against rules of their logsource (the mapping's logsource fields).
fn detection_engine(collection: &SigmaCollection) -> Result<DetectionRules> {
    let rules_error = |e: rsigma_eval::EvalError| DetectError::Rules(e.to_string());
    let mut engine = Engine::new();
    engine.set_logsource_extractor(Some(LogSourceExtractor::new().with_field_names(
        PRODUCT_FIELD,
        SERVICE_FIELD,
        CATEGORY_FIELD,
    )));
    let compiled = collection
        .rules
        .iter()
        .map(compile_rule)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(rules_error)?;
    engine.extend_compiled_rules(compiled);
    for filter in &collection.filters {
        engine.apply_filter(filter).map_err(rules_error)?;
    }
    Ok(DetectionRules(Arc::new(engine)))
}

/// `tags` without repeats, in order (a finding's labels are a set).
fn unique(tags: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    tags.iter()
        .filter(|t| seen.insert(t.as_str()))
        .cloned()
        .collect()
}
