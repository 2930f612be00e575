//! The command line (GATEWAY.md 1). `main` parses it and runs `serve`; the other commands
//! live here. Exit codes: 0 success, 1 a failed check or test, 2 usage errors.

pub mod demo_backend;
mod simulate;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{process_env, DEFAULT_CONFIG_PATH};
use crate::runtime::Runtime;
use crate::signature::{Encoding, Secret, SecretError};
use crate::telemetry::{LogFormat, Metrics};

pub use simulate::{simulate, SimulateArgs};

/// pollgate: a gateway for MplusKASSA point-of-sale webhooks.
///
/// Tills POST signed events to pollgate; a Rhai rule per event decides the answer
/// (finish, keep polling, messages for the cashier and the customer), events can be
/// forwarded to back ends in the background, and every answer is signed.
///
/// Start with the shipped example rules:   pollgate serve
/// Act as a till against it:               pollgate simulate --url http://127.0.0.1:8080/webhooks --event scanCode
/// Validate config and rules:              pollgate check
/// Run the rule tests in rules/tests:      pollgate test
#[derive(Debug, Parser)]
#[command(
    name = "pollgate",
    version,
    propagate_version = true,
    verbatim_doc_comment
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: the webhook listener and the admin listener.
    ///
    /// Reloads config and rules on POST /reload (admin listener), SIGHUP and changes of the
    /// config file or its rule files (other files in the folder, like a log, are ignored);
    /// stops gracefully on SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Load the config, decode every secret, compile every rule; print each problem as
    /// `file:line:col: message` and exit 1 if there is any. Never binds a port.
    Check(ConfigArg),
    /// Print the X-Mplus-Signature of FILE (or stdin), byte for byte.
    ///
    /// Example: pollgate sign --secret "$MPLUS_SECRET" body.json
    Sign(SignArgs),
    /// Act as a till: send a signed event, check each answer's signature, repeat while the
    /// answer says polling is not finished, and print the cashier's and customer's messages.
    ///
    /// Exit 0 when finished; 1 on a bad signature, an error answer or --max-polls.
    Simulate(SimulateArgs),
    /// Run rule test cases (YAML) without network; exit 1 on any failure.
    ///
    /// PATH is a test file or a folder of them; default: the `tests` folder beside the config.
    Test(TestArgs),
    /// Run a small approvals back end for trying the shipped rules (see README).
    ///
    /// POST /mplus/startPayment is approved (or declined above --approve-up-to) after
    /// --delay; every other event is answered {}.
    DemoBackend(demo_backend::DemoBackendArgs),
    /// Exit 0 when the gateway's admin /readyz answers 200, else 1 (for Docker HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The readiness URL.
    #[arg(
        long,
        env = "POLLGATE_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:9090/readyz"
    )]
    pub url: String,
}

/// `pollgate healthcheck`.
pub async fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    crate::upstream::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::from(1);
        }
    };
    match client.get(&args.url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("healthcheck: {} answered {}", args.url, r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("healthcheck: cannot reach {}: {}", args.url, causes(&e));
            ExitCode::from(1)
        }
    }
}

/// Why a request got no answer, down to the cause a user can act on: reqwest's own
/// message only names the URL ("error sending request for url (...)"); its sources say
/// "tcp connect error: Connection refused (os error 111)" or "dns error: ...".
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let text = e.to_string();
        // Some layers repeat their source's text in their own.
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// `--secret` (and `--encoding`) as a key; the messages name the options, not config keys.
fn secret_arg(text: &str, encoding: EncodingArg) -> Result<Secret, String> {
    Secret::decode(text, encoding.into()).map_err(|e| match e {
        SecretError::NotBase64 => {
            "--secret: the secret is not valid base64 (pass --encoding utf8 to use the text as it is)"
                .to_owned()
        }
        SecretError::Empty => format!("--secret: {e}"),
    })
}

/// Where the config file is.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file [default: $POLLGATE_CONFIG, else rules/pollgate.yaml]
    #[arg(long, short, env = "POLLGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH, hide_default_value = true)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log line format; the level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The secret as the back office shows it.
    #[arg(long, env = "MPLUS_SECRET", hide_env_values = true)]
    pub secret: String,
    /// How the secret becomes the key.
    #[arg(long, value_enum, default_value = "base64")]
    pub encoding: EncodingArg,
    /// The body to sign [default: stdin]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The config the cases run against, unless a test file names its own with `config:`
    /// [default: $POLLGATE_CONFIG, else rules/pollgate.yaml, else pollgate.yaml beside the
    /// test file, else in its parent folder]
    #[arg(long, short, env = "POLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Test files or folders [default: the `tests` folder beside the config]
    pub paths: Vec<PathBuf>,
}

/// `--encoding` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EncodingArg {
    /// The key is the base64-decoded secret.
    Base64,
    /// The key is the secret's UTF-8 bytes.
    Utf8,
}

impl From<EncodingArg> for Encoding {
    fn from(e: EncodingArg) -> Self {
        match e {
            EncodingArg::Base64 => Self::Base64,
            EncodingArg::Utf8 => Self::Utf8,
        }
    }
}

/// `pollgate check`.
pub fn check(args: &ConfigArg) -> ExitCode {
    let config = match crate::runtime::load_config(&args.config, &process_env) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(1);
        }
    };
    let (events, upstreams, subscriptions) = (
        config.events.len(),
        config.upstreams.len(),
        config.subscriptions.len(),
    );
    let demo: Vec<String> = config
        .subscriptions
        .values()
        .filter(|s| s.is_demo)
        .map(|s| s.id.clone())
        .collect();
    match Runtime::build(config, &std::sync::Arc::new(Metrics::new()), 1) {
        Ok(_) => {
            println!(
                "{}: ok ({}, {}, {})",
                args.config.display(),
                count(events, "event"),
                count(subscriptions, "subscription"),
                count(upstreams, "upstream"),
            );
            for id in demo {
                println!("note: subscription {id} uses the public demo secret");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::from(1)
        }
    }
}

/// `1 event`, `2 events`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `pollgate sign`.
pub fn sign(args: &SignArgs) -> ExitCode {
    let secret = match secret_arg(&args.secret, args.encoding) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let body = match &args.file {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map(|_| buf)
                .map_err(|e| format!("stdin: {e}"))
        }
    };
    match body {
        Ok(body) => {
            println!("{}", secret.sign(&body));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `pollgate test`.
pub fn test(args: &TestArgs) -> ExitCode {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    // The environment is read here, at the command line, and handed down.
    match crate::testing::run(
        args.config.as_deref(),
        &args.paths,
        &process_env,
        &mut out,
        &mut err,
    ) {
        Ok(summary) => {
            let _ = writeln!(out, "{summary}");
            if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(1)
        }
    }
}
