//! `sluice-operator`: run the operator (default), print the CRDs, or render the objects
//! the operator would apply for a `KafkaCluster`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_operator::crd;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-operator",
    version,
    about = "Kubernetes operator for Sluice"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
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
        #[arg(long, env = "SLUICE_BROKER_IMAGE", default_value = sluice_operator::DEFAULT_BROKER_IMAGE)]
        broker_image: String,
        /// Cluster id for clusters without status.clusterId (random when unset).
        #[arg(long)]
        cluster_id: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds { write, repo_root }) => match crds(write, &repo_root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice-operator: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Render {
            file,
            namespace,
            broker_image,
            cluster_id,
        }) => {
            let options = sluice_operator::render::RenderOptions {
                namespace,
                default_image: broker_image,
                cluster_id,
            };
            let result = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))
                .and_then(|input| {
                    sluice_operator::render::render(&input, &options)
                        .map_err(|e| format!("{}: {e}", file.display()))
                });
            match result {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluice-operator: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => ExitCode::SUCCESS,
    }
}

fn crds(write: bool, repo_root: &std::path::Path) -> Result<(), String> {
    if !write {
        print!(
            "{}",
            crd::crds_yaml().map_err(|e| format!("cannot serialize CRDs: {e}"))?
        );
        return Ok(());
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
