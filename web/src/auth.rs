//! Signing in to the dashboard, and who may read.
//!
//! The admin token is asked for once; signing in sets an `HttpOnly`,
//! `SameSite=Strict` session cookie, and every form that changes something
//! carries the session's CSRF token. Without an admin session the dashboard
//! is read-only; without an admin token configured nobody can change
//! anything.
//!
//! With a read token configured, reading needs it too (see
//! [`guard_reads`]): the dashboard asks for it (or the admin token) at sign
//! in, and the API and `/metrics` take either as a bearer token.
//! `/healthz` and the sign-in page stay open.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;

use querypulse_domain::token::tokens_match;

use crate::pages::{Layout, PageError, Request, html};
use crate::{Dashboard, now_ms};

/// Name of the session cookie.
pub(crate) const COOKIE_NAME: &str = "querypulse_session";
/// How long a session lasts.
const SESSION_MS: i64 = 12 * 3_600_000;
/// Sessions kept at once; the oldest go first.
const MAX_SESSIONS: usize = 1_000;

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    expires_ms: i64,
    /// Opened with the admin token (may change things), not the read token.
    admin: bool,
}

/// The signed-in sessions, and the tokens that open one.
#[derive(Debug)]
pub(crate) struct Sessions {
    pub(crate) token: Option<String>,
    /// When set, reading needs this token (or the admin token).
    pub(crate) read_token: Option<String>,
    /// Without a read token: whether peers other than loopback need the
    /// admin token to read (they do unless reads were opened explicitly).
    pub(crate) loopback_reads_only: bool,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Who is asking.
#[derive(Debug, Clone, Default)]
pub(crate) struct Visitor {
    /// The session's CSRF token, when signed in.
    pub csrf: Option<String>,
    /// Whether anyone can sign in (an admin token is configured).
    pub writes_enabled: bool,
}

impl Visitor {
    /// Signed in.
    pub fn signed_in(&self) -> bool {
        self.csrf.is_some()
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

impl Sessions {
    pub fn new(token: Option<String>, read_token: Option<String>, loopback_reads_only: bool) -> Sessions {
        Sessions {
            token: token.filter(|t| !t.is_empty()),
            read_token: read_token.filter(|t| !t.is_empty()),
            loopback_reads_only,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a request with `headers` from `peer` may read:
    ///
    /// - with a read token: it carries a live session, or the read or admin
    ///   token as a bearer token;
    /// - without one: anyone may, unless reads are for loopback only; then a
    ///   peer that is not on loopback (or not known) needs a live admin
    ///   session or the admin token.
    pub fn may_read(&self, headers: &HeaderMap, peer: Option<std::net::IpAddr>) -> bool {
        let now = now_ms();
        let session = cookie(headers).and_then(|id| self.sessions().get(&id).filter(|s| s.expires_ms > now).cloned());
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let admin = |presented: &str| self.token.as_deref().is_some_and(|t| tokens_match(presented, t));
        match &self.read_token {
            Some(read_token) => {
                session.is_some()
                    || bearer.is_some_and(|presented| tokens_match(presented, read_token) || admin(presented))
            }
            None if !self.loopback_reads_only || peer.is_some_and(|ip| ip.is_loopback()) => true,
            None => session.is_some_and(|s| s.admin) || bearer.is_some_and(admin),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who sent `headers`.
    pub fn visitor(&self, headers: &HeaderMap) -> Visitor {
        let now = now_ms();
        let csrf = cookie(headers).and_then(|id| {
            let sessions = self.sessions();
            sessions
                .get(&id)
                .filter(|s| s.expires_ms > now && s.admin)
                .map(|s| s.csrf.clone())
        });
        Visitor {
            csrf: csrf.filter(|_| self.token.is_some()),
            writes_enabled: self.token.is_some(),
        }
    }

    /// Checks a form that changes something: a live session and its CSRF
    /// token.
    pub fn check_form(&self, headers: &HeaderMap, csrf: &str) -> Result<(), PageError> {
        if self.token.is_none() {
            return Err(PageError::Forbidden(
                "Changes are disabled: start the collector with --admin-token (or QUERYPULSE_ADMIN_TOKEN).".into(),
            ));
        }
        let Some(expected) = self.visitor(headers).csrf else {
            return Err(PageError::Forbidden(
                "Sign in with the admin token first: this page is read-only without it.".into(),
            ));
        };
        if !tokens_match(&expected, csrf) {
            return Err(PageError::Forbidden(
                "The form's security token does not match your session: reload the page and try again.".into(),
            ));
        }
        Ok(())
    }

    /// Opens a session for a correct token (admin or read); returns its id.
    fn open(&self, token: &str) -> Option<String> {
        let admin = self.token.as_deref().is_some_and(|t| tokens_match(t, token));
        if !admin && !self.read_token.as_deref().is_some_and(|t| tokens_match(t, token)) {
            return None;
        }
        let now = now_ms();
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.expires_ms > now);
        if sessions.len() >= MAX_SESSIONS {
            let oldest: HashSet<String> = {
                let mut by_age: Vec<(&String, i64)> = sessions.iter().map(|(k, s)| (k, s.expires_ms)).collect();
                by_age.sort_by_key(|(_, e)| *e);
                by_age
                    .iter()
                    .take(sessions.len() + 1 - MAX_SESSIONS)
                    .map(|(k, _)| (*k).clone())
                    .collect()
            };
            sessions.retain(|k, _| !oldest.contains(k));
        }
        let id = random_token();
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                expires_ms: now + SESSION_MS,
                admin,
            },
        );
        Some(id)
    }

    fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.sessions().remove(&id);
        }
    }
}

/// Paths anyone may request, whatever the read token says.
fn always_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/login" | "/logout")
}

/// Lets a request through when it may read (see [`Sessions::may_read`]);
/// otherwise the API and `/metrics` answer 401 and dashboard pages send the
/// browser to sign in.
pub(crate) async fn guard_reads(
    State(dashboard): State<Dashboard>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if always_open(path) || dashboard.sessions.may_read(request.headers(), peer) {
        return next.run(request).await;
    }
    if path.starts_with("/api/") || path == "/metrics" {
        let error = if dashboard.sessions.read_token.is_some() {
            "reading needs the read token (or the admin token) as `Authorization: Bearer <token>`"
        } else {
            "reads from other hosts need a token: send the admin token as `Authorization: Bearer <token>`, \
             or start the collector with --read-token (or --open-reads to let anyone who reaches it read)"
        };
        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": error })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let next_param: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    see_other(&format!("/login?next={next_param}"))
}

/// A redirect after a form (303, so a reload does not post again).
pub(crate) fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// Where to go after signing in: a path on this host only, so `next`
/// cannot send anyone elsewhere. `next` is resolved as a browser resolves a
/// `Location` (the WHATWG URL parser: tabs and newlines removed, `\\` read
/// as `/`), and only a result on the same origin is kept, re-serialized,
/// so `/\t/evil.example/` is refused like `//evil.example/`.
fn local_path(next: Option<&str>) -> String {
    const FALLBACK: &str = "/settings";
    let Some(next) = next.filter(|n| n.starts_with('/')) else {
        return FALLBACK.to_owned();
    };
    let base = url::Url::parse("http://querypulse.invalid/").expect("a valid base");
    match base.join(next) {
        Ok(url) if url.origin() == base.origin() => {
            let mut path = url.path().to_owned();
            if let Some(query) = url.query() {
                path.push('?');
                path.push_str(query);
            }
            path
        }
        _ => FALLBACK.to_owned(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    error: Option<String>,
    /// A read token is configured: signing in is needed to read.
    reads_closed: bool,
}

pub(crate) async fn login_page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let next = request.params.get("next").cloned();
    let layout = request.layout("Sign in", "settings", "/login", &[]);
    html(LoginPage {
        layout,
        next: local_path(next.as_deref()),
        error: None,
        reads_closed: dashboard.sessions.read_token.is_some(),
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

pub(crate) async fn login(
    State(dashboard): State<Dashboard>,
    request: Request,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = local_path(form.next.as_deref());
    if dashboard.sessions.token.is_none() && dashboard.sessions.read_token.is_none() {
        return Err(PageError::Forbidden(
            "Changes are disabled: start the collector with --admin-token (or QUERYPULSE_ADMIN_TOKEN).".into(),
        ));
    }
    let Some(id) = dashboard.sessions.open(form.token.trim()) else {
        let layout = request.layout("Sign in", "settings", "/login", &[]);
        let mut response = html(LoginPage {
            layout,
            next,
            reads_closed: dashboard.sessions.read_token.is_some(),
            error: Some(if dashboard.sessions.read_token.is_some() {
                "That is neither the read token nor the admin token.".into()
            } else {
                "That is not the admin token.".into()
            }),
        })?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    };
    let mut response = see_other(&next);
    let cookie = format!(
        "{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_MS / 1_000
    );
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| PageError::Internal(e.to_string()))?,
    );
    tracing::info!("dashboard session opened");
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    dashboard.sessions.check_form(&headers, &form.csrf)?;
    dashboard.sessions.close(&headers);
    let mut response = see_other("/");
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("querypulse_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE_NAME}={value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn sessions_need_the_token_and_forms_need_the_sessions_csrf() {
        let sessions = Sessions::new(Some("secret".into()), None, false);
        assert!(sessions.open("wrong").is_none());
        assert!(!sessions.visitor(&HeaderMap::new()).signed_in());
        let id = sessions.open("secret").unwrap();
        let headers = with_cookie(&id);
        let csrf = sessions.visitor(&headers).csrf.unwrap();
        assert!(sessions.check_form(&headers, &csrf).is_ok());
        assert!(sessions.check_form(&headers, "forged").is_err());
        assert!(sessions.check_form(&with_cookie("guess"), &csrf).is_err());
        sessions.close(&headers);
        assert!(sessions.check_form(&headers, &csrf).is_err());
        let read_only = Sessions::new(None, None, false);
        assert!(read_only.open("").is_none());
        assert!(!read_only.visitor(&headers).writes_enabled);
    }

    #[test]
    fn without_a_read_token_only_loopback_reads_freely_unless_reads_are_open() {
        let loopback = Some("127.0.0.1".parse().unwrap());
        let loopback6 = Some("::1".parse().unwrap());
        let remote = Some("192.0.2.7".parse().unwrap());
        let bearer = |token: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
            headers
        };
        let none = HeaderMap::new();

        let protected = Sessions::new(Some("admin".into()), None, true);
        assert!(protected.may_read(&none, loopback));
        assert!(protected.may_read(&none, loopback6));
        assert!(!protected.may_read(&none, remote));
        assert!(!protected.may_read(&none, None), "an unknown peer is not loopback");
        assert!(!protected.may_read(&bearer("guess"), remote));
        assert!(protected.may_read(&bearer("admin"), remote));
        let admin_session = protected.open("admin").unwrap();
        assert!(protected.may_read(&with_cookie(&admin_session), remote));

        let open = Sessions::new(Some("admin".into()), None, false);
        assert!(open.may_read(&none, remote));

        // A read token decides for every peer, loopback included.
        let closed = Sessions::new(Some("admin".into()), Some("reader".into()), true);
        assert!(!closed.may_read(&none, loopback));
        assert!(closed.may_read(&bearer("reader"), remote));
        assert!(closed.may_read(&bearer("admin"), remote));
    }

    #[test]
    fn redirects_stay_on_this_site() {
        assert_eq!(local_path(Some("/settings?x=1")), "/settings?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/settings");
        assert_eq!(local_path(Some("https://evil.example/")), "/settings");
        assert_eq!(local_path(None), "/settings");
        // What browsers normalize into another host.
        for sneaky in [
            "/\t/evil.example/x",
            "/\n/evil.example/x",
            "/\r\n/evil.example",
            "/\\evil.example/x",
            "\\/evil.example",
            "/\\\\evil.example",
            " //evil.example",
            "\t//evil.example",
        ] {
            assert_eq!(local_path(Some(sneaky)), "/settings", "{sneaky:?}");
        }
        // Local paths survive, re-serialized (nothing to inject into the header).
        assert_eq!(local_path(Some("/queries/abc#top")), "/queries/abc");
        assert_eq!(local_path(Some("/a/../pools")), "/pools");
        assert_eq!(local_path(Some("/x y")), "/x%20y");
    }
}
