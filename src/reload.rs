//! Reloading config and rules: from `POST /reload`, SIGHUP and changes in the rules folder.
//!
//! A reload reads and compiles everything into a new [`Runtime`] first and swaps it in
//! with one atomic store; calls in flight keep the generation they loaded. A failed
//! reload keeps the last good generation, is logged and counted, and reports why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Mutex;

use crate::config::{Config, Problems};
use crate::pipeline::Gateway;
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
    /// One reload at a time, so generations are numbered in the order they were built.
    lock: Arc<Mutex<()>>,
}

impl Reloader {
    pub fn new(gateway: Gateway, path: PathBuf, env: Env) -> Self {
        Self {
            gateway,
            path,
            env,
            lock: Arc::default(),
        }
    }

    /// Loads, validates and compiles the config again; swaps it in when all is well.
    pub async fn reload(&self, trigger: &str) -> Result<u64, Problems> {
        let _one_at_a_time = self.lock.lock().await;
        let current = self.gateway.runtime.load();
        let generation = current.generation + 1;
        let path = self.path.clone();
        let env = self.env.clone();
        let metrics = self.gateway.metrics.clone();
        // Reading files and compiling rules is blocking work: keep it off the call path.
        let built = tokio::task::spawn_blocking(move || {
            let config = crate::runtime::load_config(&path, &*env)?;
            Runtime::build(config, &metrics, generation)
        })
        .await
        .unwrap_or_else(|e| {
            Err(crate::config::Problem::in_file(&self.path, format!("reload panicked: {e}")).into())
        });
        match built {
            Ok(runtime) => {
                warn_about_restart_only_changes(&current.config, &runtime.config);
                self.gateway.runtime.store(Arc::new(runtime));
                self.gateway.metrics.reload(true);
                self.gateway.metrics.set_generation(generation);
                tracing::info!(trigger, generation, "config reloaded");
                Ok(generation)
            }
            Err(problems) => {
                self.gateway.metrics.reload(false);
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
    /// bind mounts swap them) and reloads after changes settle for `debounce`.
    pub async fn watch_folder(self, debounce: Duration, mut shutdown: Shutdown) {
        let folder = self
            .path
            .parent()
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !matches!(event.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "cannot watch {}: {e}; reload with POST /reload or SIGHUP",
                    folder.display()
                );
                return;
            }
        };
        if let Err(e) = watcher.watch(&folder, RecursiveMode::Recursive) {
            tracing::warn!(
                "cannot watch {}: {e}; reload with POST /reload or SIGHUP",
                folder.display()
            );
            return;
        }
        tracing::info!("watching {} for rule and config changes", folder.display());
        loop {
            tokio::select! {
                changed = rx.recv() => {
                    if changed.is_none() { return; }
                    // Debounce: wait until the folder is quiet for `debounce`.
                    loop {
                        match tokio::time::timeout(debounce, rx.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    let _ = self.reload("rules folder changed").await;
                }
                () = shutdown.wait() => return,
            }
        }
    }
}

fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    if old.server.listen != new.server.listen || old.admin.listen != new.admin.listen {
        tracing::warn!("listen addresses changed; they take effect at the next restart");
    }
    if old.state.store != new.state.store {
        tracing::warn!("state.store changed; it takes effect at the next restart");
    }
}
