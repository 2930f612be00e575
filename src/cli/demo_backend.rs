//! `pollgate demo-backend`: a small approvals back end for trying the shipped rules.
//!
//! It answers `POST {prefix}/startPayment` after `--delay` with a manager's decision
//! (approved up to `--approve-up-to`, declined above) and every other event with `{}`.
//! It checks `X-Mplus-Signature` when given `--secret` and logs what it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::parse_duration;
use crate::signature::{Encoding, Secret, SIGNATURE_HEADER};

#[derive(Debug, Clone, Args)]
pub struct DemoBackendArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// How long the "manager" takes to decide.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub delay: Duration,
    /// Payments up to this total are approved, larger ones declined.
    #[arg(long, default_value_t = 1000.0)]
    pub approve_up_to: f64,
    /// Verify X-Mplus-Signature with this base64 secret (the upstream's or subscription's).
    #[arg(long, env = "MPLUS_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// Serves until Ctrl-C.
pub async fn run(args: DemoBackendArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    serve(listener, args).await
}

/// Serves on `listener` forever (tests run it in a task).
pub async fn serve(listener: TcpListener, args: DemoBackendArgs) -> std::io::Result<()> {
    let secret = match &args.secret {
        Some(s) => Some(
            Secret::decode(s, Encoding::Base64)
                .map_err(|e| std::io::Error::other(format!("--secret: {e}")))?,
        ),
        None => None,
    };
    eprintln!(
        "demo back end on http://{}/mplus (decides after {:?})",
        listener.local_addr()?,
        args.delay
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let (args, secret) = (args.clone(), secret.clone());
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| answer(args.clone(), secret.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    args: DemoBackendArgs,
    secret: Option<Secret>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let event = req.uri().path().rsplit('/').next().unwrap_or_default();
    let event = event.to_owned();
    let headers = req.headers();
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let key = key.unwrap_or("-").to_owned();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(413, &json!({"error": "body too large"}))),
    };
    if let Some(secret) = &secret {
        if secret.verify(&signature, &body).is_err() {
            eprintln!("{event} [{key}]: bad signature, refused");
            return Ok(reply(401, &json!({"error": "bad signature"})));
        }
    }
    let parsed: Value = crate::body::parse(&body)
        .map(|m| rhai::serde::from_dynamic(&m.into()).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    if event != "startPayment" {
        eprintln!("{event} [{key}]: noted");
        return Ok(reply(200, &json!({})));
    }
    let total = payment_total(&parsed);
    eprintln!(
        "{event} [{key}]: payment of {total:.2}; the manager decides in {:?}",
        args.delay
    );
    tokio::time::sleep(args.delay).await;
    let decision = if total <= args.approve_up_to {
        json!({"approved": true, "manager": "Sam"})
    } else {
        json!({"approved": false, "reason": format!("over the branch limit of {:.2}", args.approve_up_to)})
    };
    eprintln!("{event} [{key}]: {decision}");
    Ok(reply(200, &decision))
}

/// A startPayment's total: its session lines' `priceIncl` times `quantity` (default 1).
fn payment_total(body: &Value) -> f64 {
    let Some(lines) = body.pointer("/session/lines").and_then(Value::as_array) else {
        return 0.0;
    };
    lines
        .iter()
        .map(|l| l["priceIncl"].as_f64().unwrap_or(0.0) * l["quantity"].as_f64().unwrap_or(1.0))
        .sum()
}

fn reply(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}
