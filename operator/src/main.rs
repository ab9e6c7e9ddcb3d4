//! `sluice-operator`: run the operator (the default), print the CRDs, or render the objects
//! the operator would apply for a `KafkaCluster`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use sluice_operator::runtime::{run, RunOptions};
use sluice_operator::{crd, render, DEFAULT_BROKER_IMAGE};
use tracing::error;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-operator",
    version,
    about = "Kubernetes operator for Sluice: KafkaCluster and KafkaTopic",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Settings for `run`, which is what runs without a subcommand.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers (the default).
    Run(RunArgs),
    /// Print both CRDs as multi-document YAML (or write the committed copies).
    Crds {
        /// Write crds/*.yaml and charts/sluice-operator/files/crds/*.yaml under --repo-root
        /// instead of printing.
        #[arg(long)]
        write: bool,
        /// Repository root for --write.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
        repo_root: PathBuf,
    },
    /// Print every object the operator would apply for the KafkaClusters in a YAML file
    /// (other documents are skipped), as multi-document YAML.
    Render {
        /// A YAML file with one or more KafkaCluster documents.
        file: PathBuf,
        /// Namespace for resources that do not set one.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Broker image for clusters without spec.image.
        #[arg(long, env = "SLUICE_BROKER_IMAGE", default_value = DEFAULT_BROKER_IMAGE)]
        broker_image: String,
        /// Cluster id for clusters without status.clusterId (random when unset).
        #[arg(long)]
        cluster_id: Option<String>,
    },
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Watch only this namespace; empty watches all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    namespace: String,
    /// Run the controllers only while holding the leader Lease (so replicas can be added).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "sluice-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (default: the watched namespace, else the client's).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Address of the side port serving /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_LISTENER", default_value = "0.0.0.0:8080")]
    http_listener: SocketAddr,
    /// Broker image for KafkaClusters without spec.image.
    #[arg(long, env = "SLUICE_BROKER_IMAGE", default_value = DEFAULT_BROKER_IMAGE)]
    broker_image: String,
    /// Most partitions a scaling workflow (rebalance after a scale-up, drain before a
    /// scale-down) moves at once per cluster: the pace that keeps clients running.
    #[arg(long, env = "MAX_PARTITION_MOVES", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_partition_moves: u16,
    /// This replica's identity for the Lease and Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds { write, repo_root }) => report(crds(write, &repo_root)),
        Some(Command::Render {
            file,
            namespace,
            broker_image,
            cluster_id,
        }) => report(render_file(
            &file,
            &render::RenderOptions {
                namespace,
                default_image: broker_image,
                cluster_id,
            },
        )),
        Some(Command::Run(args)) => run_operator(args),
        None => run_operator(cli.run),
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run_operator(args: RunArgs) -> ExitCode {
    init_logging(args.log_format);
    let identity = args
        .identity
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("sluice-operator-{}", uuid::Uuid::new_v4()));
    let options = RunOptions {
        namespace: Some(args.namespace).filter(|s| !s.is_empty()),
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace.filter(|s| !s.is_empty()),
        http_listener: args.http_listener,
        broker_image: args.broker_image,
        identity,
        max_partition_moves: usize::from(args.max_partition_moves),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-operator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn crds(write: bool, repo_root: &Path) -> Result<(), String> {
    if !write {
        let yaml = crd::crds_yaml().map_err(|e| format!("cannot serialize CRDs: {e}"))?;
        return write_stdout(&yaml);
    }
    let files = crd::crd_files().map_err(|e| format!("cannot serialize CRDs: {e}"))?;
    for dir in crd::CRD_DIRS {
        let dir = repo_root.join(dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        for f in &files {
            let path = dir.join(&f.file_name);
            std::fs::write(&path, &f.yaml).map_err(|e| format!("write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn render_file(file: &Path, options: &render::RenderOptions) -> Result<(), String> {
    let input = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let out = render::render(&input, options).map_err(|e| format!("{}: {e}", file.display()))?;
    write_stdout(&out)
}

/// Print `text`; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}
