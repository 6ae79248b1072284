//! TLS end to end: `querypulse serve --tls-cert --tls-key --read-token
//! --admin-token` (its own process) answers HTTPS, refuses plain HTTP,
//! closes reads without the token, takes the load generator's batches over
//! gRPC with TLS, and after a SIGHUP serves a renewed certificate to new
//! connections while the agents' streams stay up. Certificates are made by
//! the `openssl` command for the test.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, free_port};
use querypulse_loadgen::{LoadgenConfig, Target};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A test CA (`ca.pem`, `ca.key`) in `dir`.
fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=querypulse test CA",
        ],
    );
}

/// A certificate named `cn`, signed by the CA, with the X.509 extensions
/// `ext`, written to `{name}.pem` and `{name}.key`.
fn make_cert(dir: &Path, cn: &str, name: &str, ext: &str) {
    std::fs::write(dir.join("cert.ext"), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "next.key",
            "-out",
            "next.csr",
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "next.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "next.pem",
            "-days",
            "2",
            "-extfile",
            "cert.ext",
        ],
    );
    // Renamed into place, as a certificate renewal does.
    std::fs::rename(dir.join("next.pem"), dir.join(format!("{name}.pem"))).unwrap();
    std::fs::rename(dir.join("next.key"), dir.join(format!("{name}.key"))).unwrap();
}

/// A certificate for 127.0.0.1 named `cn`: `server.pem` / `server.key`.
fn make_server_cert(dir: &Path, cn: &str) {
    make_cert(dir, cn, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
}

/// A client certificate named `cn`: `client.pem` / `client.key`.
fn make_client_cert(dir: &Path, cn: &str) {
    make_cert(dir, cn, "client", "extendedKeyUsage=clientAuth\n");
}

/// `querypulse serve` with TLS from `dir`'s `server.pem` and `server.key`,
/// and `extra` arguments.
fn serve_tls(dir: &Path, grpc: u16, http: u16, extra: &[&std::ffi::OsStr]) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_querypulse"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .arg("--tls-cert")
            .arg(dir.join("server.pem"))
            .arg("--tls-key")
            .arg(dir.join("server.key"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// A fresh HTTPS client trusting only `ca`, reporting the peer's
/// certificate.
fn https_client(ca: &[u8]) -> reqwest::Client {
    querypulse_collector::http_client_builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
        .tls_info(true)
        .build()
        .unwrap()
}

/// The certificate a new HTTPS connection is served (a client of its own:
/// a resumed TLS session would show the certificate of the first).
async fn served_certificate(ca: &[u8], http: u16) -> Vec<u8> {
    let response = https_client(ca)
        .get(format!("https://127.0.0.1:{http}/healthz"))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(response.status(), 200);
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate().map(<[u8]>::to_vec))
        .expect("the peer certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_grpc_refuses_plain_http_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    make_server_cert(dir.path(), "first-certificate");
    let (grpc, http) = (free_port(), free_port());
    let tokens = ["--read-token", "reader", "--admin-token", "admin"].map(std::ffi::OsStr::new);
    let collector = serve_tls(dir.path(), grpc, http, &tokens);
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let client = querypulse_collector::http_client_builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("https://127.0.0.1:{http}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the collector did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = served_certificate(&ca, http).await;
    assert!(first.windows(17).any(|w| w == b"first-certificate"));

    // Plain HTTP is not served; reads need the token.
    let plain = querypulse_collector::http_client()
        .get(format!("http://127.0.0.1:{http}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP answered"
    );
    let read = |token: Option<&'static str>| {
        let mut request = client.get(format!("https://127.0.0.1:{http}/api/v1/services"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(read(None).await.unwrap().status(), 401);
    assert_eq!(read(Some("reader")).await.unwrap().status(), 200);

    // Agents over gRPC with TLS, across a certificate reload.
    let mut load = LoadgenConfig::new(
        4,
        20,
        Duration::from_secs(1),
        Duration::from_secs(8),
        Target::Collector {
            endpoint: format!("https://127.0.0.1:{grpc}"),
            token: None,
        },
    );
    load.ca_cert_pem = Some(ca.clone());
    let load = tokio::spawn(querypulse_loadgen::run(load));
    tokio::time::sleep(Duration::from_secs(3)).await;
    make_server_cert(dir.path(), "renewed-certificate");
    let hup = Command::new("kill")
        .args(["-HUP", &collector.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = served_certificate(&ca, http).await;
        if served.windows(19).any(|w| w == b"renewed-certificate") {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = load.await.unwrap().expect("the load generator runs over TLS");
    assert!(report.totals.batches_acked > 0, "{:?}", report.totals);
    assert_eq!(report.totals.unacked_at_end, 0, "{:?}", report.totals);
    assert_eq!(
        report.totals.reconnects, 0,
        "the reload dropped agent streams: {:?}",
        report.totals
    );

    // The embedded agent, given the CA.
    let agent = querypulse_agent::Agent::builder("tls-service")
        .endpoint(format!("https://127.0.0.1:{grpc}"))
        .tls_ca_cert(ca.clone())
        .start()
        .unwrap();
    agent.record_query("select 1", Duration::from_millis(2), querypulse_agent::Outcome::OK);
    agent.flush().await.expect("acknowledged over TLS");
    agent.shutdown().await.unwrap();

    // A plain-text gRPC agent is not served.
    let mut plain = LoadgenConfig::new(
        1,
        5,
        Duration::from_secs(1),
        Duration::from_secs(2),
        Target::Collector {
            endpoint: format!("http://127.0.0.1:{grpc}"),
            token: None,
        },
    );
    plain.services = 1;
    let plain = querypulse_loadgen::run(plain).await.expect("the load generator runs");
    assert_eq!(plain.totals.batches_acked, 0, "{:?}", plain.totals);
}

/// With `--client-ca`, agents must present a certificate signed by that CA:
/// without one nothing gets through, with one the load generator and the
/// embedded agent report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    make_server_cert(dir.path(), "collector");
    make_client_cert(dir.path(), "agent-1");
    let (grpc, http) = (free_port(), free_port());
    let client_ca = dir.path().join("ca.pem");
    let _collector = serve_tls(
        dir.path(),
        grpc,
        http,
        &[std::ffi::OsStr::new("--client-ca"), client_ca.as_os_str()],
    );
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let identity = (
        std::fs::read(dir.path().join("client.pem")).unwrap(),
        std::fs::read(dir.path().join("client.key")).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_certificate_or_none(&ca, http).await.is_none() {
        assert!(Instant::now() < deadline, "the collector did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = |identity: Option<(Vec<u8>, Vec<u8>)>| {
        let mut load = LoadgenConfig::new(
            2,
            5,
            Duration::from_secs(1),
            Duration::from_secs(3),
            Target::Collector {
                endpoint: format!("https://127.0.0.1:{grpc}"),
                token: None,
            },
        );
        load.services = 1;
        load.ca_cert_pem = Some(ca.clone());
        load.client_identity_pem = identity;
        querypulse_loadgen::run(load)
    };
    let without = run(None).await.expect("the load generator runs");
    assert_eq!(without.totals.batches_acked, 0, "{:?}", without.totals);
    let with = run(Some(identity.clone())).await.expect("the load generator runs");
    assert!(with.totals.batches_acked > 0, "{:?}", with.totals);
    assert_eq!(with.totals.unacked_at_end, 0, "{:?}", with.totals);

    let agent = querypulse_agent::Agent::builder("mtls-service")
        .endpoint(format!("https://127.0.0.1:{grpc}"))
        .tls_ca_cert(ca.clone())
        .tls_client_identity(identity.0, identity.1)
        .start()
        .unwrap();
    agent.record_query("select 1", Duration::from_millis(2), querypulse_agent::Outcome::OK);
    agent.flush().await.expect("acknowledged with a client certificate");
    agent.shutdown().await.unwrap();
}

/// Whether the HTTPS listener answers yet.
async fn served_certificate_or_none(ca: &[u8], http: u16) -> Option<()> {
    https_client(ca)
        .get(format!("https://127.0.0.1:{http}/healthz"))
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success())
        .map(|_| ())
}
