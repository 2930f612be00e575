//! pollgate: a gateway for MplusKASSA point-of-sale webhooks.
//!
//! A call's path through the modules:
//!
//! - [`http`]: the webhook listener (routing, reading bodies, signing answers) behind its
//!   tower stack, the admin listener (with its OpenAPI document), and graceful serving with
//!   connection bounds and the overload guard for request bodies.
//! - [`pipeline`]: the checks of GATEWAY.md 6, before and after the body is read
//!   ([`pipeline::Verified`] is made only there), and a verified call's way to its answer,
//!   one stage a file: the conversation loop, forwards and `hold`, the rule, shaping.
//! - [`signature`]: `X-Mplus-Signature`, HMAC-SHA256 over raw bytes.
//! - [`body`]: strict then lenient JSON parsing of request bodies.
//! - [`conversation`]: conversation keys, the store trait, the memory and Redis stores.
//! - [`rules`]: the Rhai engine, the rule API, limits and evaluation.
//! - [`upstream`]: the HTTP client to back ends and the background forwards.
//! - [`outbox`]: durable delivery: the queue (embedded fjall or Redis) and its workers.
//! - `redis_connection`: the one Redis connection type of the Redis store and outbox
//!   (one Redis, TLS or a cluster), made without waiting for Redis and kept reaching it.
//! - [`push`]: pushing to tills: a till's mailbox (memory or Redis, with wakers for held
//!   backgroundPoll calls) and the hold of a call.
//! - [`runtime`]: one compiled configuration generation (swapped whole on reload).
//! - [`config`]: the YAML config file, validated before any port is bound.
//! - [`tls`]: `server.tls`, the webhook listener's PEM certificate and key for rustls.
//!
//! Around them: [`app`] wires the parts and serves; [`gateway`] is the shared handle the
//! listeners, the pipeline and the reloader hold (store, forwarder, clock, metrics, the
//! generation in use); [`error_answer`] has every error answer pollgate gives; [`reload`]
//! swaps generations; [`shutdown`] is shutdown as a value; [`telemetry`] has logs and
//! metrics; [`cli`] the command line; and [`testing`] the rule test runner behind
//! `pollgate test`.

pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod error_answer;
pub mod gateway;
pub mod http;
pub mod outbox;
pub mod pipeline;
pub mod push;
mod redis_connection;
pub mod reload;
pub mod rules;
pub mod runtime;
pub mod shutdown;
pub mod signature;
pub mod telemetry;
pub mod testing;
pub mod tls;
pub mod upstream;

pub use app::{App, AppError};
