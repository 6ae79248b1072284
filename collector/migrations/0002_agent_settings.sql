-- Settings pushed to every connected agent (NULL keeps the agent's own).
CREATE TABLE agent_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    slow_threshold_ms INTEGER CHECK (slow_threshold_ms IS NULL OR slow_threshold_ms >= 0),
    max_samples_per_fingerprint INTEGER CHECK (max_samples_per_fingerprint IS NULL OR max_samples_per_fingerprint >= 0),
    max_samples_per_window INTEGER CHECK (max_samples_per_window IS NULL OR max_samples_per_window >= 0),
    interval_ms INTEGER CHECK (interval_ms IS NULL OR interval_ms > 0),
    updated_at_ms INTEGER NOT NULL
);
