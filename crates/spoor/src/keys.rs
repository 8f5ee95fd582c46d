//! `spoor keys rotate`: re-wraps every data key under a data dir with a new master key. Only
//! the key slots in the files' headers change; no data is rewritten (docs/security.md).

use std::path::PathBuf;

use anyhow::{Context, bail};
use spoor_server::Config;
use spoor_server::encryption;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Re-wrap every data key under the data dir (WAL, blocks, agent queue) with a new master
    /// key. Stop the server (or agent) first. Crash-safe and idempotent: after an interruption,
    /// run the same command again.
    Rotate(RotateArgs),
}

#[derive(clap::Args)]
pub struct RotateArgs {
    /// YAML configuration file: the data dir, the local blocks path and the agent's queue
    /// directory, and (as the old key) storage.encryption.key_file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A directory to rotate (repeatable): a data dir, a local blocks path elsewhere, an agent
    /// queue directory. Default: those of the configuration.
    #[arg(long = "data-dir")]
    data_dirs: Vec<PathBuf>,
    /// The key the data is encrypted with now [default: storage.encryption.key_file].
    #[arg(long)]
    old_key_file: Option<PathBuf>,
    /// The key to encrypt it with from now on. Point storage.encryption.key_file at it afterwards.
    #[arg(long)]
    new_key_file: PathBuf,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    let Command::Rotate(args) = command;
    let config = Config::load(args.config.as_deref(), std::env::vars(), &[])?;
    let st = &config.storage;
    let dirs = if args.data_dirs.is_empty() {
        let mut dirs = vec![st.data_dir.clone()];
        for extra in [st.local_path(), config.agent.queue.directory.clone()] {
            if !extra.as_os_str().is_empty() && extra.is_dir() && !extra.starts_with(&st.data_dir) {
                dirs.push(extra);
            }
        }
        dirs
    } else {
        args.data_dirs.clone()
    };
    let old_file = match args.old_key_file.clone() {
        Some(f) => f,
        None if !st.encryption.key_file.as_os_str().is_empty() => st.encryption.key_file.clone(),
        None => bail!("--old-key-file is required (storage.encryption.key_file is not set)"),
    };
    let old = spoor_seal::MasterKey::load(&old_file)?;
    let new = spoor_seal::MasterKey::load(&args.new_key_file)?;
    // A running server or agent holds LOCK: it must not write files under the old key while
    // they are rotated.
    let mut locks = Vec::new();
    for dir in dirs.iter().flat_map(|d| [d.clone(), d.join("queue")]) {
        if dir.join("LOCK").exists() {
            locks.push(
                spoor_server::http::lock_data_dir(&dir)
                    .with_context(|| format!("{} is in use: stop the process using it first", dir.display()))?,
            );
        }
    }
    let done = encryption::rotate_dirs(&dirs, &old, &new)?;
    println!(
        "rotated {} encrypted files under {} to the key in {} (key id {}); {} re-wrapped in this run",
        done.files,
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        args.new_key_file.display(),
        new.id_hex(),
        done.rewrapped
    );
    println!("now set storage.encryption.key_file to {}", args.new_key_file.display());
    Ok(())
}
