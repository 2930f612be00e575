//! `pollgate simulate`: a till in a terminal. Sends a signed event, checks the signature
//! of every answer, repeats while polling, and shows what the till's screens would show.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::config::parse_duration;
use crate::signature::{Secret, SIGNATURE_HEADER, SUBSCRIPTION_HEADER};

use super::EncodingArg;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The subscription's base URL; the event name is appended.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks")]
    pub url: String,
    /// The event to send, e.g. scanCode, addSessionLine, completeSession.
    #[arg(long)]
    pub event: String,
    /// The subscription's secret as the back office shows it [default: the shipped demo secret]
    #[arg(
        long,
        env = "MPLUS_SECRET",
        hide_env_values = true,
        default_value = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz",
        hide_default_value = true
    )]
    pub secret: String,
    /// How the secret becomes the key.
    #[arg(long, value_enum, default_value = "base64")]
    pub encoding: EncodingArg,
    /// The X-Mplus-Subscription-Id to send.
    #[arg(long, default_value = "example_subscription")]
    pub subscription: String,
    /// The request body (JSON). Default: a fresh example event (new session, now as its time).
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// With --body: give the event a new sessionId and eventTimestamp, so each run is a new
    /// conversation (without it, a second run gets the first run's final answer replayed).
    #[arg(long, requires = "body")]
    pub fresh: bool,
    /// Pause between polls, like 500ms or 2s.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Give up (exit 1) after this many calls without `finished: true` [default: 30].
    /// backgroundPoll keeps polling (each pushed message starts a new call) until this
    /// many calls, or forever without it.
    #[arg(long)]
    pub max_polls: Option<u32>,
    /// For an https:// URL: trust only the CA certificates in this PEM file (e.g. a private
    /// CA that signed server.tls.cert).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// Runs the simulation; prints the exchange to `out` and the error, if any, to stderr
/// (GATEWAY.md 1: errors go to stderr, one line a problem).
pub async fn simulate(args: &SimulateArgs, out: &mut dyn Write) -> ExitCode {
    match run(args, out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("pollgate simulate: {e}");
            ExitCode::from(1)
        }
    }
}

/// The event a till keeps calling as its channel from the back end (MPLUS.md 5).
const CHANNEL_EVENT: &str = "backgroundPoll";

async fn run(args: &SimulateArgs, out: &mut dyn Write) -> Result<(), String> {
    let secret = super::secret_arg(&args.secret, args.encoding)?;
    let body = call_body(args)?;
    let url = format!("{}/{}", args.url.trim_end_matches('/'), args.event);
    let channel = args.event == CHANNEL_EVENT;
    crate::upstream::install_crypto_provider();
    // A push channel's call is held up to its `push.hold` by design.
    let timeout = Duration::from_secs(if channel { 600 } else { 60 });
    let mut client = reqwest::Client::builder().timeout(timeout).no_proxy();
    if let Some(ca) = &args.ca {
        client = client.tls_certs_only(ca_certificates(ca)?);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let call = Call {
        client: &client,
        url: &url,
        secret: &secret,
        args,
    };
    if channel {
        return watch(&call, body, out).await;
    }
    let max_polls = args.max_polls.unwrap_or(30);
    for poll in 1..=max_polls {
        let json = call.send(&body, poll, out).await?;
        show(&json, out);
        match json.pointer("/polling/finished").and_then(Value::as_bool) {
            Some(false) => tokio::time::sleep(args.interval).await,
            _ => {
                let _ = writeln!(
                    out,
                    "finished after {poll} call{}",
                    if poll == 1 { "" } else { "s" }
                );
                return Ok(());
            }
        }
    }
    Err(format!("not finished after --max-polls {max_polls}"))
}

/// What every call of a run is sent with.
struct Call<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    secret: &'a Secret,
    args: &'a SimulateArgs,
}

impl Call<'_> {
    /// Sends `body` signed and checks the answer as a till would.
    async fn send(&self, body: &[u8], poll: u32, out: &mut dyn Write) -> Result<Value, String> {
        let _ = writeln!(out, "-> POST {} (call {poll})", self.url);
        let response = self
            .client
            .post(self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header(SUBSCRIPTION_HEADER, &self.args.subscription)
            .header(SIGNATURE_HEADER, self.secret.sign(body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {}", self.url, super::causes(&e)))?;
        checked_answer(response, self.secret, self.args, out).await
    }
}

/// backgroundPoll as a till runs it: call after call, each held by the gateway until a
/// message is pushed; each pushed message is printed as it arrives, and the next call is
/// a new conversation. Ends after `--max-polls` calls (exit 0), or on Ctrl-C.
async fn watch(call: &Call<'_>, mut body: Vec<u8>, out: &mut dyn Write) -> Result<(), String> {
    let max_polls = call.args.max_polls.unwrap_or(u32::MAX);
    let mut messages = 0u32;
    for poll in 1..=max_polls {
        let json = call.send(&body, poll, out).await?;
        show(&json, out);
        if json.pointer("/polling/finished").and_then(Value::as_bool) == Some(true) {
            messages += 1;
            let mut pushed = json.clone();
            if let Some(map) = pushed.as_object_mut() {
                map.remove("polling");
            }
            let _ = writeln!(out, "   pushed message:   {pushed}");
            body = next_call(call.args, &body)?;
        }
        let _ = out.flush();
    }
    let _ = writeln!(
        out,
        "stopped after --max-polls {max_polls}: {messages} pushed message{} arrived",
        if messages == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The body of the call after a finished one: a new conversation (a new eventTimestamp).
fn next_call(args: &SimulateArgs, body: &[u8]) -> Result<Vec<u8>, String> {
    if args.body.is_none() {
        return Ok(example_body(&args.event));
    }
    freshen(body).ok_or_else(|| "--body must be a JSON object".to_owned())
}

/// The certificates of a `--ca` PEM file: at least one, or why not.
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read --ca {}: {e}", path.display()))?;
    let certs: Vec<reqwest::Certificate> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .filter_map(|der| reqwest::Certificate::from_der(&der).ok())
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "--ca {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The body to send: `--body` (made fresh with `--fresh`) or the event's example.
fn call_body(args: &SimulateArgs) -> Result<Vec<u8>, String> {
    let Some(path) = &args.body else {
        return Ok(example_body(&args.event));
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !args.fresh {
        return Ok(bytes);
    }
    freshen(&bytes).ok_or_else(|| format!("{}: --fresh needs a JSON object body", path.display()))
}

/// Prints the answer and checks it as a till would: 200, signed with the secret, JSON.
async fn checked_answer(
    response: reqwest::Response,
    secret: &Secret,
    args: &SimulateArgs,
    out: &mut dyn Write,
) -> Result<Value, String> {
    let status = response.status().as_u16();
    let answer_signature = response
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|v| v.as_bytes().to_vec());
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let _ = writeln!(out, "<- {status} {text}");
    if status != 200 {
        let signature = answer_signature.as_deref();
        return Err(error_answer(status, &bytes, signature, secret, args));
    }
    match answer_signature {
        None => return Err("the answer is not signed (no X-Mplus-Signature)".into()),
        Some(sig) => secret
            .verify(&sig, &bytes)
            .map_err(|e| format!("the answer's signature is wrong: {e}"))?,
    }
    serde_json::from_slice(&bytes).map_err(|_| "the answer is not JSON".to_owned())
}

/// What went wrong, for an answer other than 200: the gateway's error code and message
/// first (it says which side is wrong), with what to check for the checks a till's
/// settings fail; then, for an answer that should verify, its signature.
fn error_answer(
    status: u16,
    bytes: &[u8],
    signature: Option<&[u8]>,
    secret: &Secret,
    args: &SimulateArgs,
) -> String {
    let json: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let field = |name: &str| {
        json.pointer(&format!("/error/{name}"))
            .and_then(Value::as_str)
    };
    let (Some(code), message) = (field("code"), field("message").unwrap_or("")) else {
        return format!("error answer {status} without an MplusKASSA error object (is --url a pollgate webhook base URL?)");
    };
    let mut text = format!("error answer {status} {code}: {message}");
    match code {
        "INVALID_SIGNATURE" => text.push_str(
            "; check --secret and --encoding: the gateway verifies with the subscription's secret in its config",
        ),
        "INVALID_SUBSCRIPTION_ID" => text.push_str(&format!(
            "; check --subscription: `{}` is not a subscription in the gateway's config",
            args.subscription
        )),
        "NOT_FOUND" => text.push_str(
            "; check --url: it is the base URL the event name is appended to",
        ),
        _ => {}
    }
    // With a wrong secret every answer's signature is wrong, and errors before the
    // subscription is known cannot be signed: only other error answers get a word on theirs.
    let unsignable = [
        "INVALID_SIGNATURE",
        "NO_SUBSCRIPTION_ID",
        "INVALID_SUBSCRIPTION_ID",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "TIMEOUT",
    ];
    if !unsignable.contains(&code) {
        match signature.map(|sig| secret.verify(sig, bytes)) {
            None => text.push_str(
                "\npollgate simulate: and the error answer is not signed (no X-Mplus-Signature)",
            ),
            Some(Err(e)) => text.push_str(&format!(
                "\npollgate simulate: and the error answer's signature is wrong: {e}"
            )),
            Some(Ok(())) => {}
        }
    }
    text
}

fn show(answer: &Value, out: &mut dyn Write) {
    for object in ["polling", "scanCode"] {
        let Some(o) = answer.get(object) else {
            continue;
        };
        if let Some(m) = o.get("message").and_then(Value::as_str) {
            let _ = writeln!(out, "   cashier screen:   {m}");
        }
        if let Some(m) = o.get("customerMessage").and_then(Value::as_str) {
            let _ = writeln!(out, "   customer display: {m}");
        }
    }
    if let Some(text) = answer
        .pointer("/receiptFooter/text")
        .and_then(Value::as_str)
    {
        let _ = writeln!(out, "   receipt footer:   {text}");
    }
}

/// The body with a new `session.sessionId` and `event.eventTimestamp`.
fn freshen(body: &[u8]) -> Option<Vec<u8>> {
    let map = crate::body::parse(body).ok()?;
    let mut value: Value = rhai::serde::from_dynamic(&map.into()).ok()?;
    let (stamp, id) = fresh_ids();
    if let Some(event) = value.get_mut("event").and_then(Value::as_object_mut) {
        event.insert("eventTimestamp".into(), Value::String(stamp));
    }
    if let Some(session) = value.get_mut("session").and_then(Value::as_object_mut) {
        session.insert("sessionId".into(), Value::String(id(3)));
    }
    serde_json::to_vec_pretty(&value).ok()
}

/// Now as an event timestamp, and an id maker (uuid-shaped) unique to this moment.
fn fresh_ids() -> (String, impl Fn(u128) -> String) {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_millis(now)
        .to_string()
        .replace('Z', "+00:00");
    let n = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = move |salt: u128| {
        let x = n
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(salt.wrapping_mul(0x2545_F491_4F6C_DD1D));
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (x >> 96) as u32,
            (x >> 80) as u16,
            (x >> 68) as u16 & 0xfff,
            (x >> 56) as u16 & 0xfff,
            x as u64 & 0xffff_ffff_ffff
        )
    };
    (stamp, id)
}

/// A plausible event body: a new session and line each run, so each run is a new conversation.
fn example_body(event: &str) -> Vec<u8> {
    let (stamp, id) = fresh_ids();
    let line = serde_json::json!({
        "lineId": id(1), "articleNumber": 1017, "priceIncl": 4.25, "quantity": 1, "text": "Cappuccino"
    });
    let mut body = serde_json::json!({
        "event": {"eventBlocking": true, "eventCounter": 1, "eventTimestamp": stamp},
        "sender": {"branchNumber": 1, "workplaceNumber": 1, "instanceId": id(2)},
        "session": {"sessionId": id(3), "lines": [&line]},
    });
    let specific = match event {
        "scanCode" => serde_json::json!({"scannedCode": "2500001234567", "codeType": "barcode"}),
        "addSessionLine" | "removeSessionLine" | "updateSessionLine" => {
            serde_json::json!({"line": line})
        }
        _ => serde_json::json!({}),
    };
    body[event] = specific;
    serde_json::to_vec_pretty(&body).unwrap_or_default()
}
