//! A headless Chromium driven over the DevTools protocol (CDP), just enough
//! to load pages, hear every console error, failed request and uncaught
//! exception, read the links a page shows, and take screenshots.
//!
//! Chromium is Debian's `chromium`, found through `QUERYPULSE_TEST_CHROMIUM`
//! (see DEVELOPERS.md). It runs with a fresh profile, no network services of
//! its own, and is only ever pointed at 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to start, and one page to load.
const START_LIMIT: Duration = Duration::from_secs(60);
const LOAD_LIMIT: Duration = Duration::from_secs(30);

/// What went wrong driving the browser.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrowserError(String);

fn fail(what: impl std::fmt::Display) -> BrowserError {
    BrowserError(what.to_string())
}

/// What loading one page showed.
#[derive(Debug, Clone, Default)]
pub struct Visit {
    /// HTTP status of the document.
    pub status: u16,
    /// Console errors, uncaught exceptions, failed or 4xx/5xx requests.
    pub errors: Vec<String>,
    /// Absolute URLs of every `<a href>` on the page.
    pub links: Vec<String>,
    /// The document's title.
    pub title: String,
}

/// A running headless Chromium with one page open.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    pending: Vec<Value>,
}

impl Browser {
    /// Starts `binary` headless with a fresh profile and attaches to its page.
    pub fn launch(binary: &Path, width: u32, height: u32) -> Result<Browser, BrowserError> {
        let profile = tempfile::Builder::new()
            .prefix("querypulse-chromium-")
            .tempdir()
            .map_err(fail)?;
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", binary.display())))?;
        let mut browser_guard = ChildGuard(Some(child));
        let port = wait_for_port(profile.path(), browser_guard.0.as_mut().expect("the child"))?;
        let socket = page_socket(port)?;
        let child = browser_guard.0.take().expect("the child");
        let mut browser = Browser {
            child,
            _profile: profile,
            socket,
            next_id: 0,
            pending: Vec::new(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
            browser.call(domain, json!({}))?;
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(browser)
    }

    /// Sends a command and waits for its result; events that arrive
    /// meanwhile are kept for [`Browser::visit`].
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::text(message)).map_err(fail)?;
        let deadline = Instant::now() + LOAD_LIMIT;
        loop {
            let message = self.receive(deadline)?;
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    return Err(fail(format!("{method} failed: {error}")));
                }
                return Ok(message["result"].clone());
            }
            self.pending.push(message);
        }
    }

    fn receive(&mut self, deadline: Instant) -> Result<Value, BrowserError> {
        loop {
            if Instant::now() >= deadline {
                return Err(fail("Chromium did not answer in time"));
            }
            match self.socket.read() {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).map_err(fail),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) => return Err(fail(format!("DevTools connection: {e}"))),
            }
        }
    }

    /// Loads `url`, waits for its load event, and reports what happened.
    pub fn visit(&mut self, url: &str) -> Result<Visit, BrowserError> {
        self.pending.clear();
        let navigated = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            return Err(fail(format!("{url}: {error}")));
        }
        let deadline = Instant::now() + LOAD_LIMIT;
        let mut events = std::mem::take(&mut self.pending);
        while !events.iter().any(|e| e["method"] == "Page.loadEventFired") {
            events.push(self.receive(deadline)?);
        }
        let mut visit = Visit::default();
        for event in &events {
            let p = &event["params"];
            match event["method"].as_str().unwrap_or_default() {
                "Runtime.exceptionThrown" => visit.errors.push(format!("exception: {}", p["exceptionDetails"])),
                "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "assert")) => {
                    visit.errors.push(format!("console.{}: {}", p["type"], p["args"]));
                }
                "Log.entryAdded" if p["entry"]["level"] == "error" => {
                    visit
                        .errors
                        .push(format!("log: {} {}", p["entry"]["text"], p["entry"]["url"]));
                }
                "Network.loadingFailed" if p["canceled"] != true => {
                    visit.errors.push(format!("request failed: {}", p["errorText"]));
                }
                "Network.responseReceived" => {
                    let status = p["response"]["status"].as_u64().unwrap_or(0) as u16;
                    if p["type"] == "Document" {
                        visit.status = status;
                    }
                    if status >= 400 {
                        visit.errors.push(format!("{status} for {}", p["response"]["url"]));
                    }
                }
                _ => {}
            }
        }
        let read = self.call(
            "Runtime.evaluate",
            json!({
                "expression": "JSON.stringify({title: document.title, links: Array.from(document.querySelectorAll('a[href]'), a => a.href)})",
                "returnByValue": true,
            }),
        )?;
        let page: Value = serde_json::from_str(read["result"]["value"].as_str().unwrap_or("{}")).map_err(fail)?;
        visit.title = page["title"].as_str().unwrap_or_default().to_owned();
        visit.links = page["links"]
            .as_array()
            .map(|links| links.iter().filter_map(|l| l.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(visit)
    }

    /// Saves a PNG of the whole current page (up to `max_height` pixels).
    pub fn screenshot(&mut self, path: &Path, max_height: u32) -> Result<PathBuf, BrowserError> {
        let metrics = self.call("Page.getLayoutMetrics", json!({}))?;
        let width = metrics["cssContentSize"]["width"].as_f64().unwrap_or(1400.0).ceil();
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(900.0)
            .ceil()
            .min(f64::from(max_height));
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(fail)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        std::fs::write(path, png).map_err(fail)?;
        Ok(path.to_owned())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills Chromium if launching fails half way.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Chromium writes its DevTools port to `DevToolsActivePort` in the profile.
fn wait_for_port(profile: &Path, child: &mut Child) -> Result<u16, BrowserError> {
    let deadline = Instant::now() + START_LIMIT;
    let file = profile.join("DevToolsActivePort");
    loop {
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            return Ok(port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("Chromium exited at start ({status})")));
        }
        if Instant::now() >= deadline {
            return Err(fail("Chromium did not open its DevTools port in time"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connects to the DevTools socket of Chromium's first page.
fn page_socket(port: u16) -> Result<WebSocket<TcpStream>, BrowserError> {
    let mut http = TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    http.set_read_timeout(Some(LOAD_LIMIT)).map_err(fail)?;
    http.write_all(b"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    // Chromium keeps the connection open: read exactly Content-Length bytes.
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    let body = loop {
        let n = http.read(&mut chunk).map_err(fail)?;
        if n == 0 {
            return Err(fail("DevTools closed the connection early"));
        }
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if body.len() >= length {
            break body.to_owned();
        }
    };
    let targets: Value = serde_json::from_str(&body).map_err(|e| fail(format!("{e}: {body}")))?;
    let url = targets
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .ok_or_else(|| fail(format!("no page target in {targets}")))?
        .to_owned();
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    stream.set_read_timeout(Some(LOAD_LIMIT)).map_err(fail)?;
    let (socket, _) =
        tungstenite::client(url.as_str(), stream).map_err(|e| fail(format!("connecting to {url}: {e}")))?;
    // From here reads wake up often so waits can keep their own deadlines.
    socket
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(250)))
        .map_err(fail)?;
    Ok(socket)
}
