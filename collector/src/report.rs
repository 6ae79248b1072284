//! `querypulse report`: a running collector's performance report over a
//! range — top queries, slowest, most failing, regressions versus the
//! previous period, pool summary — printed as Markdown, HTML or JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::http::parse_time;
use querypulse_domain::now_ms;

/// Length of the report when `--from` is not given.
pub const DEFAULT_REPORT_MS: i64 = 24 * 3_600_000;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Markdown, for a ticket or a chat.
    Md,
    /// One self-contained HTML document, linking back to the dashboard.
    Html,
    /// The report's data, for scripts.
    Json,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Md => "md",
            Format::Html => "html",
            Format::Json => "json",
        }
    }
}

/// Arguments of `querypulse report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The collector's HTTP address
    #[arg(long, env = "QUERYPULSE_URL", default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// The collector's read token (or admin token), when reads need one
    #[arg(long, env = "QUERYPULSE_READ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Start of the range: RFC 3339 (2026-11-27T10:00:00Z) or Unix epoch milliseconds [default: 24 h before --to]
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range [default: now]
    #[arg(long)]
    pub to: Option<String>,
    /// Only this service
    #[arg(long)]
    pub service: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Write the report to this file instead of standard output
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Fetches the report from the collector at `args.url`.
pub async fn fetch(args: &ReportArgs) -> anyhow::Result<String> {
    let to = match &args.to {
        Some(t) => parse_time("--to", t).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => now_ms(),
    };
    let from = match &args.from {
        Some(f) => parse_time("--from", f).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => to - DEFAULT_REPORT_MS,
    };
    anyhow::ensure!(from < to, "--from must be earlier than --to");
    let mut query = vec![
        ("range", "custom".to_owned()),
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("format", args.format.as_str().to_owned()),
    ];
    if let Some(service) = &args.service {
        query.push(("service", service.clone()));
    }
    let url = reqwest::Url::parse_with_params(&format!("{}/report", args.url.trim_end_matches('/')), &query)
        .with_context(|| format!("--url {:?} is not a URL", args.url))?;
    let mut request = crate::http_client().get(url);
    if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("asking the collector at {} for the report (is it running?)", args.url))?;
    let status = response.status();
    let body = response.text().await.context("reading the report")?;
    anyhow::ensure!(
        status.is_success(),
        "the collector answered {status}: {}",
        error_message(&body)
    );
    Ok(body)
}

/// The message of the dashboard's error page.
fn error_message(body: &str) -> &str {
    body.split_once("<p class=\"error\">")
        .and_then(|(_, rest)| rest.split_once("</p>"))
        .map_or(body, |(message, _)| message)
}

/// Runs `querypulse report`.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let report = fetch(&args).await?;
    match &args.output {
        Some(path) => std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(report.as_bytes()).context("writing the report")?;
            out.flush().context("writing the report")?;
        }
    }
    Ok(())
}
