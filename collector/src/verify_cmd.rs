//! `querypulse verify`: checks that a collector's stored numbers agree with
//! themselves (see [`querypulse_store::verify`]). Prints every disagreement with
//! its series and span, and exits non-zero when there is one.
//!
//! - `--data-dir DIR`: a stopped collector's data. The store is opened as a
//!   start would open it (the write-ahead log is replayed into partitions
//!   that missed it); nothing is sealed or expired.
//! - `--url URL`: a running collector checks its own store, read-only,
//!   looking again at whatever disagrees while it is being written.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::config::DEFAULT_DATA_DIR;
use crate::settings_db::SettingsDb;
use querypulse_domain::clock::Clock;
use querypulse_store::{Limits, Store, VerifyReport, verify_settled};

/// How often a running collector looks again at a disagreement, and how
/// long apart: a group of batches reaches the resolutions one after the
/// other, and a checkpoint is at most 30 s away.
pub const RUNNING_RETRIES: u32 = 3;
/// See [`RUNNING_RETRIES`].
pub const RUNNING_PAUSE: Duration = Duration::from_secs(1);

/// Arguments of `querypulse verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Data directory of a stopped collector
    #[arg(long, env = "QUERYPULSE_DATA_DIR", default_value = DEFAULT_DATA_DIR, conflicts_with = "url")]
    pub data_dir: PathBuf,
    /// A running collector's HTTP address: it checks its own store
    #[arg(long)]
    pub url: Option<String>,
    /// The running collector's admin token
    #[arg(long, env = "QUERYPULSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs `querypulse verify`; `Ok(false)` when something disagrees.
pub async fn run(args: VerifyArgs) -> anyhow::Result<bool> {
    let report = match &args.url {
        Some(url) => ask(url, args.admin_token.as_deref()).await?,
        None => open_and_verify(args.data_dir.clone()).await?,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing the report")?;
        writeln!(out).context("writing the report")?;
    } else {
        writeln!(out, "{report}").context("writing the report")?;
    }
    Ok(report.is_clean())
}

/// Opens a stopped collector's store and checks it.
async fn open_and_verify(data_dir: PathBuf) -> anyhow::Result<VerifyReport> {
    let store_dir = data_dir.join("store");
    anyhow::ensure!(
        store_dir.join("meta").is_dir(),
        "{} holds no querypulse store (no store/meta directory)",
        data_dir.display()
    );
    let settings_db = SettingsDb::open(&data_dir)
        .await
        .with_context(|| format!("opening the settings database in {}", data_dir.display()))?;
    let retention = settings_db
        .retention()
        .await
        .context("reading the retention settings")?
        .unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        let (store, _writer) = match Store::open(&store_dir, retention, Limits::default(), Clock::system()) {
            Ok(opened) => opened,
            // sled locks its files: the error of a store that a running
            // collector holds names the lock.
            Err(error) if error.to_string().contains("could not acquire lock") => anyhow::bail!(
                "the store in {} is in use by a running collector; let it check itself: \
                 querypulse verify --url http://<its HTTP address> --admin-token <token>",
                data_dir.display()
            ),
            Err(error) => return Err(error).with_context(|| format!("opening the store in {}", store_dir.display())),
        };
        Ok(verify_settled(&store, 0, Duration::ZERO))
    })
    .await
    .context("the check stopped")?
}

/// Asks a running collector to check its own store.
async fn ask(url: &str, token: Option<&str>) -> anyhow::Result<VerifyReport> {
    let endpoint = format!("{}/api/v1/verify", url.trim_end_matches('/'));
    let mut request = crate::http_client().get(&endpoint);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("asking the collector at {url} to verify its store (is it running?)"))?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        anyhow::bail!("the collector answered {status}: {message}");
    }
    serde_json::from_str(&body).context("the collector's report is not valid JSON")
}
