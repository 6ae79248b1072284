//! `querypulse report`, run as a user runs it: the real binary against a
//! running collector.

use std::process::Command;

use querypulse_collector::{Collector, Config};

fn report(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_querypulse"))
        .arg("report")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_prints_every_format_and_says_what_is_wrong() {
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start(Config::ephemeral(data.path())).await.unwrap();
    let url = format!("http://{}", collector.http_addr());
    let run = {
        let url = url.clone();
        move |args: Vec<&'static str>| {
            let url = url.clone();
            tokio::task::spawn_blocking(move || {
                let mut all = vec!["--url", url.as_str()];
                all.extend(args);
                report(&all)
            })
        }
    };

    let json = run(vec![
        "--format",
        "json",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
    ])
    .await
    .unwrap();
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON on stdout");
    assert_eq!(parsed["from"], "2026-01-01T00:00:00Z");
    assert_eq!(parsed["to"], "2026-01-02T00:00:00Z");
    assert_eq!(parsed["totals"]["calls"], 0);

    let markdown = run(vec![]).await.unwrap();
    let text = String::from_utf8_lossy(&markdown.stdout);
    assert!(
        text.starts_with("# querypulse report") && text.contains("## Pools"),
        "{text}"
    );

    let html = run(vec!["--format", "html"]).await.unwrap();
    assert!(String::from_utf8_lossy(&html.stdout).starts_with("<!doctype html>"));

    let backwards = run(vec!["--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"])
        .await
        .unwrap();
    assert!(!backwards.status.success());
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("--from must be earlier than --to"));
    let bad_time = run(vec!["--from", "yesterday"]).await.unwrap();
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("--from=\"yesterday\" is not a time"));
    collector.shutdown().await.unwrap();

    // Nothing listening any more: the error says what was being attempted.
    let down = run(vec![]).await.unwrap();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("is it running?"));
}
