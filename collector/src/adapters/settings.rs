//! Changing settings: retention and the settings pushed to agents. The JSON
//! API's `PUT`s and the dashboard's forms both go through here, so a change
//! is validated, stored and applied the same way whichever way it came.

use querypulse_domain::settings::BoxFuture;
use querypulse_domain::settings::{AgentDefaults, RetentionSettings, SettingsError};

use crate::agent_settings::AgentSettings;
use crate::http::Admin;
use querypulse_domain::now_ms;
use querypulse_store::Retention;

impl Admin {
    /// Validates, stores and applies a retention change.
    pub async fn change_retention(&self, retention: Retention) -> Result<(), SettingsError> {
        retention.validate().map_err(|e| SettingsError::Invalid(e.0))?;
        self.settings_db
            .set_retention(&retention, now_ms())
            .await
            .map_err(|e| SettingsError::Internal(e.to_string()))?;
        self.store.set_retention(retention);
        tracing::info!(?retention, "retention changed");
        Ok(())
    }

    /// Validates and stores agent settings, then pushes them to every agent.
    pub async fn change_agent_settings(&self, settings: AgentSettings) -> Result<(), SettingsError> {
        settings.validate().map_err(|e| SettingsError::Invalid(e.0))?;
        self.settings_db
            .set_agent_settings(&settings, now_ms())
            .await
            .map_err(|e| SettingsError::Internal(e.to_string()))?;
        self.agent_settings.send_replace(settings);
        tracing::info!(?settings, "agent settings changed; pushing to connected agents");
        Ok(())
    }
}

impl querypulse_domain::settings::Settings for Admin {
    fn retention(&self) -> RetentionSettings {
        let r = self.store.retention();
        RetentionSettings {
            raw_seconds: r.raw_seconds,
            minute_seconds: r.minute_seconds,
            hour_seconds: r.hour_seconds,
            max_bytes: r.max_bytes,
        }
    }

    fn set_retention(&self, r: RetentionSettings) -> BoxFuture<'_, Result<(), SettingsError>> {
        Box::pin(self.change_retention(Retention {
            raw_seconds: r.raw_seconds,
            minute_seconds: r.minute_seconds,
            hour_seconds: r.hour_seconds,
            max_bytes: r.max_bytes,
        }))
    }

    fn agent_defaults(&self) -> AgentDefaults {
        let s = *self.agent_settings.borrow();
        AgentDefaults {
            slow_threshold_ms: s.slow_threshold_ms,
            max_samples_per_fingerprint: s.max_samples_per_fingerprint,
            max_samples_per_window: s.max_samples_per_window,
            interval_ms: s.interval_ms,
        }
    }

    fn set_agent_defaults(&self, s: AgentDefaults) -> BoxFuture<'_, Result<(), SettingsError>> {
        Box::pin(self.change_agent_settings(AgentSettings {
            slow_threshold_ms: s.slow_threshold_ms,
            max_samples_per_fingerprint: s.max_samples_per_fingerprint,
            max_samples_per_window: s.max_samples_per_window,
            interval_ms: s.interval_ms,
        }))
    }
}
