//! `pollgate demo-backend`: a small approvals back end for trying the shipped rules.
//!
//! It answers `POST {prefix}/startPayment` after `--delay` with a manager's decision
//! (approved up to `--approve-up-to`, declined above) and every other event with `{}`.
//! It checks `X-Mplus-Signature` when given `--secret` and logs what it receives.
//!
//! With `--push-to` (pollgate's admin URL) it is also a gift-card kiosk's back end:
//! `POST /giftcard/{subscription}/{branch}/{workplace}` with `{"cardNumber": "..."}` looks
//! the card up and pushes an `externalCardScan` to that till through pollgate's
//! `POST /push/...` (GATEWAY.md 9), answering with pollgate's answer.

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
    /// pollgate's admin URL (e.g. http://127.0.0.1:9090): turns on
    /// `POST /giftcard/{subscription}/{branch}/{workplace}`, which pushes the scanned card to
    /// that till.
    #[arg(long)]
    pub push_to: Option<String>,
    /// The bearer token for pollgate's /push (admin.push_token or admin.token).
    #[arg(long, env = "POLLGATE_PUSH_TOKEN", hide_env_values = true)]
    pub push_token: Option<String>,
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
    if let Some(till) = req.uri().path().strip_prefix("/giftcard/") {
        let till = till.to_owned();
        return Ok(gift_card(&args, &till, req.into_body()).await);
    }
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

/// A kiosk scanned a gift card for a till: push the card and its balance to that till.
async fn gift_card(args: &DemoBackendArgs, till: &str, body: Incoming) -> Response<Full<Bytes>> {
    let Some(admin) = &args.push_to else {
        return reply(
            404,
            &json!({"error": "start the demo back end with --push-to <pollgate admin URL>"}),
        );
    };
    let body = match Limited::new(body, 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(413, &json!({"error": "body too large"})),
    };
    let scan: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(card) = scan.get("cardNumber").and_then(Value::as_str) else {
        return reply(400, &json!({"error": "send {\"cardNumber\": \"...\"}"}));
    };
    let message = json!({"externalCardScan": {
        "cardNumber": card,
        "balance": card_balance(card),
        "currency": "EUR",
    }});
    let url = format!("{}/push/{till}", admin.trim_end_matches('/'));
    crate::upstream::install_crypto_provider();
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(client) => client,
        Err(e) => return reply(500, &json!({"error": e.to_string()})),
    };
    let mut request = client
        .post(&url)
        .header("content-type", "application/json")
        .body(message.to_string());
    if let Some(token) = &args.push_token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap_or_default();
            eprintln!("gift card {card} for till {till}: pollgate answered {status} {text}");
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            reply(status, &value)
        }
        Err(e) => {
            eprintln!("gift card {card} for till {till}: cannot reach {url}: {e}");
            reply(
                502,
                &json!({"error": format!("cannot reach pollgate at {url}")}),
            )
        }
    }
}

/// A made-up balance, the same for the same card: 5.00 to 104.00.
fn card_balance(card: &str) -> f64 {
    let sum: u32 = card.bytes().map(u32::from).sum();
    f64::from(5 + sum % 100)
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
