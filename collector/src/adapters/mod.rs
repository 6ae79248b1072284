//! What the dashboard and the JSON API read through: the store as the
//! domain's [`Source`](querypulse_domain::source::Source), and the settings
//! database as its [`Settings`](querypulse_domain::settings::Settings). (The
//! alert engine implements the domain's `Alerting` itself.)

pub mod settings;
pub mod source;
