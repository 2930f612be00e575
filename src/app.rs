//! Wiring: [`App::build`] turns a validated config into a running gateway's parts, and
//! [`App::serve`] runs both listeners until shutdown. `main` and the integration tests
//! drive exactly this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceBuilder;

use crate::config::{Config, Problems, Store as StoreConfig};
use crate::conversation::{Clock, MemoryStore, RedisStore, Store, StoreError};
use crate::gateway::Gateway;
use crate::http::admin::{self, AdminState};
use crate::http::connection::ConnLimits;
use crate::http::layers::CallLayer;
use crate::http::overload::BodyBudget;
use crate::http::{self as server, webhook};
use crate::outbox::{EmbeddedOutbox, OutboxError, Queue, RedisOutbox};
use crate::push::{Mailbox, PushError, RedisMailbox, Wakers};
use crate::redis_connection::RedisConnection;
use crate::reload::{Env, Reloader};
use crate::runtime::Runtime;
use crate::shutdown::{self, Shutdown};
use crate::telemetry::Metrics;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] Problems),
    /// Shown once, naming the URL (without its password); the store's reason is the
    /// source, so `{:#}` prints it after.
    #[error("cannot use the conversation store at {url} (state.url)")]
    Store { url: String, source: StoreError },
    #[error("cannot open the push mailbox at {url} (state.url)")]
    Push { url: String, source: PushError },
    #[error("cannot open the outbox ({key})")]
    Outbox {
        key: &'static str,
        source: OutboxError,
    },
}

/// A gateway ready to serve.
pub struct App {
    gateway: Gateway,
    reloader: Reloader,
    ready: Arc<AtomicBool>,
    watch: bool,
}

/// Open admin connections at most: the operator's tools, scrapers and back ends pushing.
const ADMIN_MAX_CONNECTIONS: usize = 1024;

/// How long the rules-folder watcher waits for changes to settle.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(250);

impl App {
    /// Connects the store, compiles the rules and builds the upstream clients.
    pub async fn build(config: Config, env: Env) -> Result<Self, AppError> {
        let metrics = Arc::new(Metrics::new());
        let store = match &config.state.store {
            StoreConfig::Memory { max_conversations } => {
                Store::Memory(MemoryStore::bounded(config.state.ttl, *max_conversations))
            }
            StoreConfig::Redis {
                server,
                prefix,
                timeout,
            } => {
                // No wait for Redis here: pollgate serves (and says why it is not ready)
                // while Redis is away (GATEWAY.md 11).
                let conn = RedisConnection::open(server, "the conversation store", *timeout)
                    .map_err(|e| AppError::Store {
                        url: server.shown(),
                        source: StoreError::Unavailable(e.to_string()),
                    })?;
                Store::Redis(RedisStore::new(conn, prefix, config.state.ttl))
            }
        };
        for sub in config.subscriptions.values().filter(|s| s.is_demo) {
            tracing::warn!(
                subscription = %sub.id,
                "subscription uses the public DEMO secret from the shipped example; set MPLUS_SECRET before real tills call"
            );
        }
        let path = config.path.clone();
        let watch = config.watch;
        let queue = open_outbox(&config).await?;
        let runtime = Runtime::build(config, &metrics, 1)?;
        metrics.set_generation(1);
        let mut gateway = Gateway::new(runtime, store, Clock::system(), metrics);
        if let Some(mailbox) = open_mailbox(&gateway).await? {
            gateway = gateway.with_mailbox(mailbox);
        }
        if let Some(queue) = queue {
            gateway = gateway.with_outbox(queue);
        }
        let reloader = Reloader::new(gateway.clone(), path, env);
        Ok(Self {
            gateway,
            reloader,
            ready: Arc::new(AtomicBool::new(false)),
            watch,
        })
    }

    /// The gateway's shared parts (for tests and tools).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Serves webhooks on `webhook` and the admin endpoints on `admin` until `shutdown`;
    /// then drains calls in flight and background forwards, together within one
    /// `server.shutdown_grace`.
    pub async fn serve(self, webhook: TcpListener, admin: TcpListener, shutdown: Shutdown) {
        let (config_grace, request_timeout, limits) = {
            let server = &self.gateway.runtime.load().config.server;
            let limits = ConnLimits {
                header_timeout: server.header_timeout,
                idle_timeout: server.idle_timeout,
                max_connections: server.max_connections,
            };
            (server.shutdown_grace, server.request_timeout, limits)
        };
        let budget = BodyBudget::default();
        let (admin_stop, admin_task) = self.serve_admin(admin, budget.clone(), limits);
        if let Some(outbox) = &self.gateway.outbox {
            outbox.start(shutdown.clone());
        }
        let background = self.background(&shutdown);

        let gateway = self.gateway.clone();
        // Telemetry and the last-resort deadline around the handler; see `http::layers`.
        let service = ServiceBuilder::new()
            .layer(CallLayer {
                timeout: request_timeout,
                runtime: self.gateway.runtime.clone(),
            })
            .service_fn(move |req| webhook::handle(gateway.clone(), budget.clone(), req));

        self.ready.store(true, Ordering::Release);
        let ready = self.ready.clone();
        let mut stopping = shutdown.clone();
        let push = self.gateway.push.clone();
        let unready = tokio::spawn(async move {
            stopping.wait().await;
            ready.store(false, Ordering::Release);
            // Held backgroundPoll calls are answered now, not when their hold ends.
            push.close();
            // `server.shutdown_grace` is one grace from here for everything: the calls
            // still open and the background forwards share this deadline.
            Instant::now() + config_grace
        });
        let runtime = self.gateway.runtime.clone();
        let tls: server::TlsSource = Arc::new(move || {
            let runtime = runtime.load();
            runtime.config.server.tls.as_ref().map(|t| t.config.clone())
        });
        server::serve(webhook, service, shutdown, config_grace, limits, Some(tls)).await;
        let deadline = unready.await.unwrap_or_else(|_| Instant::now());
        self.drain_background(deadline, config_grace).await;
        admin_stop.fire();
        let _ = admin_task.await;
        for task in background {
            task.abort();
        }
        tracing::info!("pollgate stopped");
    }
}

impl App {
    /// Background forwards and durable deliveries in flight finish by `deadline`.
    async fn drain_background(&self, deadline: Instant, grace: Duration) {
        let running = self.gateway.forwarder.running();
        if running > 0 {
            tracing::info!(running, "waiting for background forwards");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if !self.gateway.forwarder.drain(left).await {
            tracing::warn!("background forwards still running after {grace:?}; their leases will let another replica resend");
        }
        if let Some(outbox) = &self.gateway.outbox {
            let left = deadline.saturating_duration_since(Instant::now());
            outbox.drain(left).await;
        }
    }

    /// The admin listener, served until the returned trigger fires (after the webhook
    /// listener's drain, so `/readyz` answers 503 meanwhile).
    fn serve_admin(
        &self,
        admin: TcpListener,
        budget: BodyBudget,
        limits: ConnLimits,
    ) -> (shutdown::Trigger, tokio::task::JoinHandle<()>) {
        let (admin_stop, admin_shutdown) = shutdown::channel();
        let admin_state = AdminState {
            budget,
            gateway: self.gateway.clone(),
            reloader: self.reloader.clone(),
            ready: self.ready.clone(),
        };
        let admin_service = tower::service_fn(move |req| admin::handle(admin_state.clone(), req));
        let admin_task = tokio::spawn(server::serve(
            admin,
            admin_service,
            admin_shutdown,
            Duration::from_secs(1),
            ConnLimits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..limits
            },
            None,
        ));
        (admin_stop, admin_task)
    }

    /// The tasks beside the listeners: SIGHUP, the folder watcher, the memory store's
    /// sweep. Each ends on `shutdown` (and is aborted once serving is over).
    fn background(&self, shutdown: &Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let mut background = Vec::new();
        #[cfg(unix)]
        if let Some(hup) = self.reloader.clone().on_sighup(shutdown.clone()) {
            background.push(tokio::spawn(hup));
        }
        if self.watch {
            background.push(tokio::spawn(
                self.reloader
                    .clone()
                    .watch_folder(WATCH_DEBOUNCE, shutdown.clone()),
            ));
        }
        if let Store::Memory(memory) = &self.gateway.store {
            background.push(tokio::spawn(sweep(
                memory.clone(),
                self.gateway.push.clone(),
                self.gateway.clock,
                shutdown.clone(),
            )));
        }
        background
    }
}

/// The Redis mailbox with the Redis store; `None` keeps the memory one.
async fn open_mailbox(gateway: &Gateway) -> Result<Option<Mailbox>, AppError> {
    let rt = gateway.runtime.load();
    let StoreConfig::Redis {
        server,
        prefix,
        timeout,
    } = &rt.config.state.store
    else {
        return Ok(None);
    };
    let wakers = Wakers::new(gateway.metrics.push_held_calls());
    RedisMailbox::connect(server, prefix, *timeout, wakers)
        .await
        .map(|m| Some(Mailbox::Redis(m)))
        .map_err(|source| AppError::Push {
            url: server.shown(),
            source,
        })
}

/// The outbox the config asks for: in Redis with the Redis store, else in `outbox.path`
/// when given (GATEWAY.md 8).
async fn open_outbox(config: &Config) -> Result<Option<Queue>, AppError> {
    match (&config.state.store, &config.outbox) {
        (
            StoreConfig::Redis {
                server,
                prefix,
                timeout,
            },
            _,
        ) => RedisConnection::open(server, "the outbox", *timeout)
            .map(|conn| Some(Queue::Redis(RedisOutbox::new(conn, prefix))))
            .map_err(|e| AppError::Outbox {
                key: "state.url",
                source: OutboxError::Unavailable(e.to_string()),
            }),
        (StoreConfig::Memory { .. }, Some(path)) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || EmbeddedOutbox::open(&path))
                .await
                .map_err(|e| OutboxError::Unavailable(e.to_string()))
                .and_then(|r| r)
                .map(|q| Some(Queue::Embedded(q)))
                .map_err(|source| AppError::Outbox {
                    key: "outbox.path",
                    source,
                })
        }
        (StoreConfig::Memory { .. }, None) => Ok(None),
    }
}

/// Forgets expired conversations and pushed messages of the memory store now and then.
async fn sweep(store: MemoryStore, push: crate::push::Push, clock: Clock, mut shutdown: Shutdown) {
    let every = (store.ttl() / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let dropped = store.sweep(clock.now_ms());
                if dropped > 0 {
                    tracing::debug!(dropped, "expired conversations forgotten");
                }
                if let Err(e) = push.observe().await {
                    tracing::warn!("pushed messages not swept: {e}");
                }
            }
            () = shutdown.wait() => return,
        }
    }
}
