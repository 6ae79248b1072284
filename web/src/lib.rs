#![doc = include_str!("../README.md")]

mod auth;
mod cache;
mod chart;
mod format;
mod pages;
mod report;
mod status;
mod trend;
mod view;

use querypulse_domain::alerting::Alerting;
use querypulse_domain::settings::{Settings, SettingsError};
use querypulse_domain::source::{QueryFilter, QuerySummary, ServiceSummary, Source, SourceError, TimeRange};
use querypulse_domain::{alerting, settings, source};

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use cache::DEFAULT_TTL as DEFAULT_CACHE_TTL;
pub use format::{count, duration_ms};
pub use report::ALERTS_NOT_YET;

/// Shared state of the dashboard's handlers.
#[derive(Clone)]
pub struct Dashboard {
    source: Arc<dyn Source>,
    settings: Option<Arc<dyn Settings>>,
    alerting: Option<Arc<dyn Alerting>>,
    sessions: Arc<auth::Sessions>,
    cache: Arc<cache::Cache>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A read-only dashboard over `source`.
    pub fn new(source: Arc<dyn Source>) -> Dashboard {
        Dashboard {
            source,
            settings: None,
            alerting: None,
            sessions: Arc::new(auth::Sessions::new(None, None, false)),
            cache: Arc::new(cache::Cache::new(cache::DEFAULT_TTL)),
        }
    }

    /// How long a summary is served before it is recomputed in the
    /// background (default [`DEFAULT_CACHE_TTL`]); zero computes every page
    /// from the store.
    pub fn with_cache_ttl(mut self, ttl: std::time::Duration) -> Dashboard {
        self.cache = Arc::new(cache::Cache::new(ttl));
        self
    }

    /// Lets signed-in users change `settings`. Signing in takes `admin_token`;
    /// without one the settings are shown read-only.
    pub fn with_settings(mut self, settings: Arc<dyn Settings>, admin_token: Option<String>) -> Dashboard {
        self.settings = Some(settings);
        self.sessions = Arc::new(auth::Sessions::new(
            admin_token,
            self.sessions.read_token.clone(),
            self.sessions.loopback_reads_only,
        ));
        self
    }

    /// Closes reading to those with `read_token` (or the admin token):
    /// routes wrapped by [`Dashboard::guard_reads`] answer others 401 (the
    /// API, `/metrics`) or send them to sign in (pages). `/healthz` stays
    /// open.
    pub fn with_read_token(mut self, read_token: Option<String>) -> Dashboard {
        self.sessions = Arc::new(auth::Sessions::new(
            self.sessions.token.clone(),
            read_token,
            self.sessions.loopback_reads_only,
        ));
        self
    }

    /// Without a read token, lets only loopback peers read freely: others
    /// need the admin token (routes wrapped by [`Dashboard::guard_reads`],
    /// served with the peer's address as `ConnectInfo<SocketAddr>`).
    pub fn with_loopback_reads_only(mut self, loopback_only: bool) -> Dashboard {
        self.sessions = Arc::new(auth::Sessions::new(
            self.sessions.token.clone(),
            self.sessions.read_token.clone(),
            loopback_only,
        ));
        self
    }

    /// Wraps `router` (the dashboard's, the API's, or both merged) so that
    /// reading needs the read token when one is set.
    pub fn guard_reads(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), auth::guard_reads))
    }

    /// Shows the alert engine's alerts, rules, channels and silences; a
    /// signed-in admin (see [`Dashboard::with_settings`]) may change them.
    pub fn with_alerting(mut self, alerting: Arc<dyn Alerting>) -> Dashboard {
        self.alerting = Some(alerting);
        self
    }

    /// The dashboard's routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(pages::overview::page))
            .route("/queries", get(pages::queries::page))
            .route("/queries/{fingerprint}", get(pages::query::page))
            .route("/slow", get(pages::slow::page))
            .route("/pools", get(pages::pools::page))
            .route("/pools/{service}/{instance}/{pool}", get(pages::pools::detail))
            .route("/agents", get(pages::agents::page))
            .route("/report", get(pages::report::page))
            .route("/settings", get(pages::settings::page))
            .route("/settings/retention", post(pages::settings::retention))
            .route("/settings/agents", post(pages::settings::agents))
            .route("/alerts", get(pages::alerts::page))
            .route("/alerts/silences", post(pages::alerts::create_silence))
            .route("/alerts/silences/{id}/expire", post(pages::alerts::expire_silence))
            .route("/alerts/rules", get(pages::rules::page).post(pages::rules::create))
            .route("/alerts/rules/{id}", post(pages::rules::update))
            .route("/alerts/rules/{id}/delete", post(pages::rules::delete))
            .route(
                "/alerts/channels",
                get(pages::channels::page).post(pages::channels::create),
            )
            .route("/alerts/channels/{id}", post(pages::channels::update))
            .route("/alerts/channels/{id}/delete", post(pages::channels::delete))
            .route("/alerts/channels/{id}/test", post(pages::channels::test))
            .route("/login", get(auth::login_page).post(auth::login))
            .route("/logout", post(auth::logout))
            .fallback(pages::not_found)
            .with_state(self)
    }
}

/// The dashboard's routes over `source`, read-only.
pub fn router(source: Arc<dyn Source>) -> Router {
    Dashboard::new(source).router()
}

use querypulse_domain::now_ms;
