//! The `pollgate` binary: parses the command line, sets up logging, loads the config and
//! builds the gateway (every rule compiled), then binds the listeners and hands over to
//! the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use pollgate::cli::{self, Cli, Command, ServeArgs};
use pollgate::config::process_env;
use pollgate::runtime::load_config;
use pollgate::{shutdown, telemetry, App};
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: a call allocates and frees a few hundred small
/// blocks (the event as a Rhai map, the answer, hyper's buffers), and glibc's malloc, free
/// and consolidation were a tenth of the gateway's CPU under load (README, performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            match runtime().and_then(|rt| rt.block_on(serve(args))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pollgate: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check(args) => cli::check(&args),
        Command::Sign(args) => cli::sign(&args),
        Command::Test(args) => cli::test(&args),
        Command::Simulate(args) => block_on(cli::simulate(&args, &mut std::io::stdout())),
        Command::Healthcheck(args) => block_on(cli::healthcheck(&args)),
        Command::DemoBackend(args) => block_on(async move {
            match cli::demo_backend::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pollgate demo-backend: {e}");
                    ExitCode::from(1)
                }
            }
        }),
    }
}

fn block_on(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match runtime() {
        Ok(rt) => rt.block_on(future),
        Err(e) => {
            eprintln!("pollgate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use pollgate::rules::inline;
    // Stacks large enough for a rule's first slice, so fast rules need no hand-off to the
    // rule threads (pollgate::rules::RuleEngine::run).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(inline::WORKER_STACK)
        .on_thread_start(|| inline::mark_thread(inline::WORKER_STACK))
        .build()
        .context("cannot start the tokio runtime")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let path = args.config.config;
    let config = load_config(&path, &process_env).map_err(|p| anyhow::anyhow!("{p}"))?;
    let (listen, admin) = (config.server.listen, config.admin.listen);
    // Everything is checked before a port is bound: a config whose rules do not compile
    // never takes the ports from the gateway it was meant to replace.
    let app = App::build(config, Arc::new(process_env)).await?;
    let webhook = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let admin_listener = TcpListener::bind(admin)
        .await
        .with_context(|| format!("cannot listen on {admin} (admin.listen)"))?;
    tracing::info!(
        webhooks = %webhook.local_addr()?,
        admin = %admin_listener.local_addr()?,
        config = %path.display(),
        "pollgate listening"
    );
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stop signal received; finishing calls in flight");
        trigger.fire();
    });
    app.serve(webhook, admin_listener, shutdown).await;
    Ok(())
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
