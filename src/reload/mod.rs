//! Reloading config and rules: from `POST /reload`, SIGHUP and changes of the config's
//! input files (the config file, its rule files; see [`inputs`]).
//!
//! A reload reads and compiles everything into a new [`Runtime`] first and swaps it in
//! with one atomic store; calls in flight keep the generation they loaded. A failed
//! reload keeps the last good generation, is logged and counted, and reports why. A
//! change the watcher sees that leaves every input byte for byte as it is now running is
//! skipped: no new generation, nothing counted (`POST /reload` and SIGHUP always reload).

mod inputs;
mod last;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use inputs::{Fingerprint, Inputs};
pub use last::{LastReload, ReloadStatus};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Mutex;

use crate::config::{Config, Problems};
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::shutdown::Shutdown;

/// The environment lookup config loading uses.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Builds and swaps in new generations; a cheap-clone handle.
#[derive(Clone)]
pub struct Reloader {
    gateway: Gateway,
    path: PathBuf,
    env: Env,
    /// One reload at a time, so generations are numbered in the order they were built. It
    /// guards the fingerprint of the running generation's inputs (`None`: not known, so
    /// the next change reloads); a tokio lock, as it is held across the build.
    running: Arc<Mutex<Option<Fingerprint>>>,
    history: last::History,
}

/// What [`Reloader::reload_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// A new generation runs.
    New(u64),
    /// The inputs are byte for byte those of the running generation, which stays.
    Unchanged(u64),
}

impl Reloader {
    pub fn new(gateway: Gateway, path: PathBuf, env: Env) -> Self {
        let fingerprint = Inputs::of(&gateway.runtime.load().config).fingerprint();
        let history = last::History::new(gateway.clock.now_ms());
        Self {
            history,
            gateway,
            path,
            env,
            running: Arc::new(Mutex::new(Some(fingerprint))),
        }
    }

    /// The generation in use, when it was loaded, and the last reload.
    pub fn status(&self) -> ReloadStatus {
        self.history.status(self.gateway.runtime.load().generation)
    }

    /// Loads, validates and compiles the config again; swaps it in when all is well.
    pub async fn reload(&self, trigger: &str) -> Result<u64, Problems> {
        match self.run(trigger, false).await? {
            Reloaded::New(generation) | Reloaded::Unchanged(generation) => Ok(generation),
        }
    }

    /// As [`reload`](Self::reload), unless every input is byte for byte as running now.
    pub async fn reload_if_changed(&self, trigger: &str) -> Result<Reloaded, Problems> {
        self.run(trigger, true).await
    }

    async fn run(&self, trigger: &str, only_if_changed: bool) -> Result<Reloaded, Problems> {
        let mut running = self.running.lock().await;
        let current = self.gateway.runtime.load_full();
        let generation = current.generation + 1;
        let path = self.path.clone();
        let env = self.env.clone();
        let metrics = self.gateway.metrics.clone();
        let inputs = Inputs::of(&current.config);
        let known = running.clone();
        // Reading files and compiling rules is blocking work: keep it off the call path.
        let built = tokio::task::spawn_blocking(move || -> Result<_, Problems> {
            let before = inputs.fingerprint();
            if only_if_changed && known.as_ref() == Some(&before) {
                return Ok(None);
            }
            let config = crate::runtime::load_config(&path, &*env)?;
            let runtime = Runtime::build(config, &metrics, generation)?;
            // Read again after the build: the same bytes as before it means these are the
            // bytes it was built from (a change during the build leaves it unknown).
            let after = Inputs::of(&runtime.config).fingerprint();
            Ok(Some((runtime, (after == before).then_some(after))))
        })
        .await
        .unwrap_or_else(|e| {
            Err(crate::config::Problem::in_file(&self.path, format!("reload panicked: {e}")).into())
        });
        self.apply(trigger, &current, built, &mut running)
    }

    /// Swaps in a built generation, or reports why there is none.
    fn apply(
        &self,
        trigger: &str,
        current: &Runtime,
        built: Result<Option<(Runtime, Option<Fingerprint>)>, Problems>,
        running: &mut Option<Fingerprint>,
    ) -> Result<Reloaded, Problems> {
        match built {
            Ok(None) => {
                tracing::debug!(
                    trigger,
                    generation = current.generation,
                    "config and rule files unchanged; not reloading"
                );
                Ok(Reloaded::Unchanged(current.generation))
            }
            Ok(Some((runtime, fingerprint))) => {
                let generation = runtime.generation;
                warn_about_restart_only_changes(&current.config, &runtime.config);
                *running = fingerprint;
                self.gateway.runtime.store(Arc::new(runtime));
                // Held backgroundPoll calls answer now; the tills' next calls hold with
                // the new generation (its push config, its rule).
                self.gateway.push.release();
                self.gateway.metrics.reload(true);
                self.gateway.metrics.set_generation(generation);
                self.record(trigger, &[]);
                tracing::info!(trigger, generation, "config reloaded");
                Ok(Reloaded::New(generation))
            }
            Err(problems) => {
                self.gateway.metrics.reload(false);
                self.record(trigger, &problems.0);
                for problem in &problems.0 {
                    tracing::error!(
                        trigger,
                        "reload failed, keeping the running config: {problem}"
                    );
                }
                Err(problems)
            }
        }
    }

    fn record(&self, trigger: &str, problems: &[crate::config::Problem]) {
        self.history.record(LastReload {
            at_ms: self.gateway.clock.now_ms(),
            trigger: trigger.to_owned(),
            ok: problems.is_empty(),
            errors: problems.iter().map(ToString::to_string).collect(),
        });
    }

    /// Reloads on SIGHUP until shutdown. The handler is installed before this returns,
    /// so a SIGHUP right after startup reloads instead of killing the process.
    #[cfg(unix)]
    pub fn on_sighup(
        self,
        mut shutdown: Shutdown,
    ) -> Option<impl std::future::Future<Output = ()> + Send> {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /reload instead");
            return None;
        };
        Some(async move {
            loop {
                tokio::select! {
                    received = hup.recv() => {
                        if received.is_none() { return; }
                        let _ = self.reload("SIGHUP").await;
                    }
                    () = shutdown.wait() => return,
                }
            }
        })
    }

    /// Watches the config file's folder (not the file: editors and `git pull` replace files,
    /// bind mounts swap them) and reloads after changes of the config's inputs settle for
    /// `debounce`. Other files in the folder (a log, notes, editor swap files) are ignored.
    pub async fn watch_folder(self, debounce: Duration, mut shutdown: Shutdown) {
        let folder = self
            .path
            .parent()
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let Some((_watcher, mut rx)) = watch(&folder) else {
            return;
        };
        tracing::info!(
            "watching {} for changes of the config and rule files",
            folder.display()
        );
        let mut inputs = InputsOf::default();
        loop {
            tokio::select! {
                paths = rx.recv() => {
                    let Some(paths) = paths else { return };
                    if !inputs.get(&self).touched(&paths) { continue; }
                    if !self.settle(&mut rx, debounce, &mut inputs).await { return; }
                    let _ = self.reload_if_changed("config or rule file changed").await;
                }
                () = shutdown.wait() => return,
            }
        }
    }
}

impl Reloader {
    /// Debounce: waits until the inputs are quiet for `debounce`; other files' changes (a
    /// busy log) do not put it off. False when the watcher is gone.
    async fn settle(
        &self,
        rx: &mut UnboundedReceiver<Vec<PathBuf>>,
        debounce: Duration,
        inputs: &mut InputsOf,
    ) -> bool {
        let mut quiet_at = tokio::time::Instant::now() + debounce;
        loop {
            match tokio::time::timeout_at(quiet_at, rx.recv()).await {
                Ok(Some(paths)) => {
                    if inputs.get(self).touched(&paths) {
                        quiet_at = tokio::time::Instant::now() + debounce;
                    }
                }
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}

/// A watcher of `folder` (recursive) sending the paths of each change but reads; `None`,
/// with a warning, when the folder cannot be watched.
fn watch(folder: &Path) -> Option<(RecommendedWatcher, UnboundedReceiver<Vec<PathBuf>>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(event.paths);
            }
        }
    });
    let watched = watcher.and_then(|mut w| w.watch(folder, RecursiveMode::Recursive).map(|()| w));
    match watched {
        Ok(watcher) => Some((watcher, rx)),
        Err(e) => {
            tracing::warn!(
                "cannot watch {}: {e}; reload with POST /reload or SIGHUP",
                folder.display()
            );
            None
        }
    }
}

/// The running generation's [`Inputs`], worked out once per generation.
#[derive(Default)]
struct InputsOf {
    generation: u64,
    inputs: Inputs,
}

impl InputsOf {
    fn get(&mut self, reloader: &Reloader) -> &Inputs {
        let runtime = reloader.gateway.runtime.load();
        if self.generation != runtime.generation {
            self.generation = runtime.generation;
            self.inputs = Inputs::of(&runtime.config);
        }
        &self.inputs
    }
}

impl Inputs {
    fn touched(&self, paths: &[PathBuf]) -> bool {
        paths.iter().any(|p| self.is_input(p))
    }
}

fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    if old.server.listen != new.server.listen || old.admin.listen != new.admin.listen {
        tracing::warn!("listen addresses changed; they take effect at the next restart");
    }
    if old.state.store != new.state.store {
        tracing::warn!("state.store changed; it takes effect at the next restart");
    }
    let (o, n) = (&old.server, &new.server);
    if (o.header_timeout, o.idle_timeout, o.max_connections)
        != (n.header_timeout, n.idle_timeout, n.max_connections)
    {
        tracing::warn!("server.header_timeout, idle_timeout or max_connections changed; they take effect at the next restart");
    }
}
