//! `spoor blocks list|inspect`: what is in a data dir or bucket, read through the same
//! storage configuration as `spoor serve`.

use std::fmt::Write;

use spoor_block::BlockMeta;
use spoor_server::Config;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every block per tenant: tier (full or sampled), time range, spans, traces, size, bytes per span.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// One block in detail: meta, columns with their share of the bytes, dedicated columns.
    Inspect {
        /// The block ID (as `spoor blocks list` prints it).
        block_id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
pub struct Target {
    /// YAML configuration file (its `storage` section says where blocks are).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Data dir of a local backend [default: ./data].
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Target {
    async fn blocks(&self) -> anyhow::Result<spoor_store::Blocks> {
        let mut overrides = Vec::new();
        if let Some(d) = &self.data_dir {
            overrides.push(("storage.data_dir", d.display().to_string()));
        }
        let config = Config::load(self.config.as_deref(), std::env::vars(), &overrides)?;
        let blocks = spoor_server::tempo::reader::open_blocks(&config, std::env::temp_dir())?;
        blocks.poll().await?;
        Ok(blocks)
    }

    fn metas(&self, blocks: &spoor_store::Blocks) -> Vec<(BlockMeta, bool)> {
        let mut out = Vec::new();
        for tenant in blocks.tenants() {
            if self.tenant.as_ref().is_some_and(|t| *t != tenant) {
                continue;
            }
            let visible: Vec<String> = blocks.visible(&tenant).iter().map(|b| b.meta().block_id.clone()).collect();
            for b in blocks.all(&tenant) {
                let m = b.meta().clone();
                let shown = visible.contains(&m.block_id);
                out.push((m, shown));
            }
        }
        out
    }
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::List { target } => {
            let blocks = target.blocks().await?;
            let metas = target.metas(&blocks);
            if target.json {
                let list: Vec<_> =
                    metas.iter().map(|(m, visible)| serde_json::json!({ "visible": visible, "meta": m })).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", list_table(&metas));
                for tenant in blocks
                    .tenants()
                    .into_iter()
                    .chain(blocks.rollup_tenants())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    if target.tenant.as_ref().is_some_and(|t| *t != tenant) {
                        continue;
                    }
                    let rollups = blocks.rollups(&tenant);
                    if !rollups.is_empty() {
                        print!("{}", rollup_line(&tenant, &rollups));
                    }
                }
            }
        }
        Command::Inspect { block_id, target } => {
            let blocks = target.blocks().await?;
            let Some((meta, visible)) = target.metas(&blocks).into_iter().find(|(m, _)| m.block_id == block_id) else {
                anyhow::bail!("no block {block_id} (with a meta.json) in the configured backend");
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&meta)?);
            } else {
                print!("{}", inspect_text(&meta, visible));
            }
        }
    }
    Ok(())
}

fn per_span(bytes: u64, spans: u64) -> f64 {
    if spans == 0 { 0.0 } else { bytes as f64 / spans as f64 }
}

fn list_table(metas: &[(BlockMeta, bool)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<36} {:<7} {:>5} {:<20} {:<20} {:>10} {:>9} {:>12} {:>9}",
        "TENANT", "BLOCK", "TIER", "LEVEL", "START (UTC)", "END (UTC)", "SPANS", "TRACES", "BYTES", "B/SPAN"
    );
    let (mut spans, mut bytes) = (0, 0);
    for (m, visible) in metas {
        let size = m.data_bytes + m.filter_bytes;
        let mark = if *visible { "" } else { " (replaced)" };
        let _ = writeln!(
            out,
            "{:<16} {:<36} {:<7} {:>5} {:<20} {:<20} {:>10} {:>9} {:>12} {:>9.1}{mark}",
            m.tenant,
            m.block_id,
            m.tier.as_str(),
            m.compaction_level,
            utc(m.start_unix_nano),
            utc(m.end_unix_nano),
            m.spans,
            m.traces,
            size,
            per_span(size, m.spans)
        );
        if *visible {
            spans += m.spans;
            bytes += size;
        }
    }
    let _ =
        writeln!(out, "{} blocks, {spans} spans, {bytes} bytes, {:.1} bytes/span", metas.len(), per_span(bytes, spans));
    out
}

/// A tenant's rollups (the aggregated tier) on one line.
fn rollup_line(tenant: &str, rollups: &[spoor_block::rollup::RollupMeta]) -> String {
    let start = rollups.iter().map(|r| r.start_unix_nano).min().unwrap_or(0);
    let end = rollups.iter().map(|r| r.end_unix_nano).max().unwrap_or(0);
    format!(
        "{tenant}: {} rollups (aggregated tier), {} rows, {} spans counted, {} bytes, {} .. {} (UTC)\n",
        rollups.len(),
        rollups.iter().map(|r| r.rows).sum::<u64>(),
        rollups.iter().map(|r| r.spans).sum::<u64>(),
        rollups.iter().map(|r| r.data_bytes).sum::<u64>(),
        utc(start),
        utc(end)
    )
}

fn inspect_text(m: &BlockMeta, visible: bool) -> String {
    let mut out = String::new();
    let size = m.data_bytes + m.filter_bytes;
    let _ = writeln!(out, "block        {}/{}{}", m.tenant, m.block_id, if visible { "" } else { " (replaced)" });
    let _ = writeln!(out, "format       {}  level {}  tier {}", m.format, m.compaction_level, m.tier.as_str());
    let _ = writeln!(out, "time range   {} .. {} (UTC)", utc(m.start_unix_nano), utc(m.end_unix_nano));
    let _ = writeln!(out, "spans        {}  traces {}  row groups {}", m.spans, m.traces, m.row_groups);
    let _ = writeln!(
        out,
        "bytes        {size} (data {}, filter {})  {:.1} bytes/span",
        m.data_bytes,
        m.filter_bytes,
        per_span(size, m.spans)
    );
    if !m.replaces.is_empty() {
        let _ = writeln!(out, "replaces     {}", m.replaces.join(", "));
    }
    if !m.dedicated_columns.is_empty() {
        let _ = writeln!(out, "dedicated    ");
        for d in &m.dedicated_columns {
            let _ = writeln!(out, "  {:<9} {:<40} {:<7} -> {}", d.scope, d.key, d.kind, d.column);
        }
    }
    let total: u64 = m.columns.iter().map(|c| c.compressed_bytes).sum::<u64>().max(1);
    let _ =
        writeln!(out, "{:<44} {:>12} {:>14} {:>7} {:>8}", "COLUMN", "COMPRESSED", "UNCOMPRESSED", "SHARE", "B/SPAN");
    let mut cols = m.columns.clone();
    cols.sort_by_key(|c| std::cmp::Reverse(c.compressed_bytes));
    for c in cols {
        let _ = writeln!(
            out,
            "{:<44} {:>12} {:>14} {:>6.1}% {:>8.2}",
            c.name,
            c.compressed_bytes,
            c.uncompressed_bytes,
            100.0 * c.compressed_bytes as f64 / total as f64,
            per_span(c.compressed_bytes, m.spans)
        );
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from unix nanoseconds.
pub fn utc(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = spoor_model::time::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_709_210_096_000_000_000), "2024-02-29 12:34:56");
        assert_eq!(super::utc(4_102_444_799_000_000_000), "2099-12-31 23:59:59");
    }
}
