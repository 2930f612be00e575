//! One generation of configuration in use: the validated config, every rule compiled, the
//! upstream clients built and the metric handles resolved. Built whole before it replaces
//! the previous one, so a reload either swaps in a complete generation or changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use rhai::{Dynamic, Map};

use crate::body::Wanted;
use crate::config::{Answer, Config, Event, Problem, Problems};
use crate::rules::{Rule, RuleEngine};
use crate::telemetry::{EventMetrics, Metrics, Outcome};
use crate::upstream::{HttpUpstreams, UpstreamClient};

/// A compiled event.
#[derive(Debug)]
pub struct CompiledEvent {
    pub config: Event,
    pub how: How,
    pub metrics: Arc<EventMetrics>,
    /// The parts of its bodies a call builds (see [`crate::pipeline::body_reads`]).
    pub reads: Arc<Wanted>,
}

/// How an event's answer is made.
#[derive(Debug)]
pub enum How {
    Rule(Rule),
    Respond(Map),
    Reply,
    /// The pushed message is the answer (GATEWAY.md 9).
    Push,
}

/// A complete, immutable configuration generation.
pub struct Runtime {
    pub config: Config,
    pub engine: RuleEngine,
    pub events: HashMap<String, CompiledEvent>,
    /// Handles for calls that match no configured event.
    pub unconfigured: Arc<EventMetrics>,
    /// Handles for requests that are not events at all (404, 405).
    pub no_event: Arc<EventMetrics>,
    pub upstream_names: Arc<[String]>,
    pub upstreams: Arc<dyn UpstreamClient>,
    pub generation: u64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Loads the config at `path` as [`Config::load`] does; when it has problems, its rule files
/// are checked too ([`crate::rules::check`]), so one run reports every problem.
pub fn load_config(
    path: &std::path::Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Problems> {
    Config::load_checking(path, env, &crate::rules::check)
}

/// How `event` is answered, compiled; `None` (with its problems added) when it cannot be.
fn compile(
    engine: &RuleEngine,
    config: &Config,
    name: &str,
    event: &Event,
    problems: &mut Vec<Problem>,
) -> Option<How> {
    match &event.answer {
        Answer::Rule { path, source } => match engine.compile(path, source) {
            Ok(rule) => {
                problems
                    .extend(rule.unknown_upstreams(&|name| config.upstreams.contains_key(name)));
                Some(How::Rule(rule))
            }
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
        Answer::Respond(body) => {
            let map = rhai::serde::to_dynamic(body)
                .ok()
                .and_then(Dynamic::try_cast::<Map>);
            if map.is_none() {
                let key = format!("events.{name}.respond");
                problems.push(Problem::at_key(&config.path, key, "must be a map"));
            }
            map.map(How::Respond)
        }
        Answer::Reply => Some(How::Reply),
        Answer::Push => Some(How::Push),
    }
}

impl Runtime {
    /// Compiles every rule of `config`, reporting every problem at once.
    pub fn build(
        config: Config,
        metrics: &Arc<Metrics>,
        generation: u64,
    ) -> Result<Self, Problems> {
        let upstreams = HttpUpstreams::new(&config.upstreams, metrics.clone())
            .map_err(|e| Problem::in_file(&config.path, e))?;
        Self::build_with(config, metrics, generation, Arc::new(upstreams))
    }

    /// As [`Runtime::build`], with a given upstream client (`pollgate test` pretends).
    pub fn build_with(
        config: Config,
        metrics: &Arc<Metrics>,
        generation: u64,
        upstreams: Arc<dyn UpstreamClient>,
    ) -> Result<Self, Problems> {
        let engine = RuleEngine::new(&config.limits);
        let mut problems = Vec::new();
        let mut events = HashMap::new();
        for (name, event) in &config.events {
            let Some(how) = compile(&engine, &config, name, event, &mut problems) else {
                continue;
            };
            let outcomes = Outcome::of_event(event.polling.is_some(), matches!(how, How::Rule(_)));
            events.insert(
                name.clone(),
                CompiledEvent {
                    config: event.clone(),
                    reads: Arc::new(crate::pipeline::body_reads(&config.state.key, name, &how)),
                    how,
                    metrics: metrics.event(name, &outcomes),
                },
            );
        }
        if !problems.is_empty() {
            // Events come in name order; problems go file by file, line by line.
            problems.sort_by(|a, b| (&a.file, a.position).cmp(&(&b.file, b.position)));
            return Err(Problems(problems));
        }
        for name in config.upstreams.keys() {
            metrics.declare_upstream(name);
        }
        let upstream_names: Arc<[String]> = config.upstreams.keys().cloned().collect();
        Ok(Self {
            // With a `"*"` event, no call is unconfigured.
            unconfigured: metrics.event(
                "unconfigured",
                if events.contains_key("*") {
                    &[]
                } else {
                    Outcome::UNCONFIGURED
                },
            ),
            no_event: metrics.event("none", Outcome::NO_EVENT),
            upstream_names,
            upstreams,
            engine,
            events,
            config,
            generation,
        })
    }

    /// The compiled event for `name`: its own, else `"*"`.
    pub fn event(&self, name: &str) -> Option<&CompiledEvent> {
        self.events.get(name).or_else(|| self.events.get("*"))
    }
}
