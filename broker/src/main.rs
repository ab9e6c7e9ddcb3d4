//! `sluice-broker`: run a Sluice broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_broker::config::BrokerConfig;

/// A Kafka-compatible broker. Settings use Kafka's names: defaults, then `--config FILE`
/// (repeatable, later files win; `${env:NAME}` in a value reads the environment),
/// then `SLUICE_*` environment variables (`log.dirs` is `SLUICE_LOG_DIRS`), then `--set`,
/// then the dedicated flags.
#[derive(Parser, Debug)]
#[command(name = "sluice-broker", version)]
struct Args {
    /// A properties file (`key=value` lines); repeatable, later files win.
    #[arg(long)]
    config: Vec<PathBuf>,
    /// A setting `key=value`, repeatable (e.g. `--set num.partitions=3`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Data directory (`log.dirs`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener HOST:PORT (`listeners`); port 0 picks a free port.
    #[arg(long)]
    listener: Option<String>,
    /// Address advertised to clients HOST:PORT (`advertised.listeners`).
    #[arg(long)]
    advertised_listener: Option<String>,
    /// HTTP side port HOST:PORT for /metrics, /healthz, /readyz (`http.listener`).
    #[arg(long)]
    http_listener: Option<String>,
    /// Broker id (`node.id`).
    #[arg(long)]
    node_id: Option<i32>,
}

fn build_config(args: &Args) -> Result<BrokerConfig, String> {
    let mut config = BrokerConfig::default();
    for path in &args.config {
        config.load_file(path).map_err(|e| e.to_string())?;
    }
    config
        .load_env(std::env::vars())
        .map_err(|e| e.to_string())?;
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set expects KEY=VALUE, got `{kv}`"))?;
        config.set(k.trim(), v).map_err(|e| e.to_string())?;
    }
    let flags = [
        (
            "log.dirs",
            args.data_dir.as_ref().map(|p| p.display().to_string()),
        ),
        ("listeners", args.listener.clone()),
        ("advertised.listeners", args.advertised_listener.clone()),
        ("http.listener", args.http_listener.clone()),
        ("node.id", args.node_id.map(|n| n.to_string())),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            config.set(key, &v).map_err(|e| e.to_string())?;
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-broker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match sluice_broker::server::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sluice-broker: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Signal handlers first, so a SIGTERM right after the ready line is a clean stop.
        let signal = wait_for_signal();
        // The one line on stdout: scripts and tests wait for it.
        println!(
            "sluice-broker ready kafka={} http={}",
            running.kafka_addr, running.http_addr
        );
        signal.await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Installs the SIGTERM / SIGINT handlers now; the returned future resolves on either.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
