-- Alerting: notification channels, rules, silences and the history of every
-- alert transition and delivery. Kind-specific settings are JSON documents
-- validated by the collector before they are written.

-- Where notifications go (webhook, email, alertmanager, log, custom).
CREATE TABLE alert_channels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    settings TEXT NOT NULL,
    send_resolved INTEGER NOT NULL CHECK (send_resolved IN (0, 1)),
    repeat_interval_ms INTEGER NOT NULL CHECK (repeat_interval_ms > 0),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- Alert rules: the rule itself as JSON (kind, parameters, scope, timing,
-- labels, annotations); `default_key` names the built-in default a row was
-- installed from.
CREATE TABLE alert_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL,
    default_key TEXT UNIQUE,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- Which channels a rule notifies. A channel still used by a rule cannot be
-- deleted.
CREATE TABLE alert_rule_channels (
    rule_id INTEGER NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES alert_channels (id) ON DELETE RESTRICT,
    position INTEGER NOT NULL,
    PRIMARY KEY (rule_id, channel_id)
);

-- Silences: label matchers (JSON) muting notifications between two times.
CREATE TABLE alert_silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers TEXT NOT NULL,
    starts_at_ms INTEGER NOT NULL,
    ends_at_ms INTEGER NOT NULL CHECK (ends_at_ms > starts_at_ms),
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- One row once the zero-config defaults were installed, so defaults a user
-- removed are not installed again on the next start.
CREATE TABLE alert_defaults (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    installed_at_ms INTEGER NOT NULL
);

-- Every transition (pending, firing, resolved, inactive) with the value that
-- caused it, and every delivery (notified, failed with its error).
CREATE TABLE alert_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    rule_id INTEGER NOT NULL,
    rule_name TEXT NOT NULL,
    alert TEXT NOT NULL,
    labels TEXT NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    channel_id INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX alert_history_at ON alert_history (at_ms);
CREATE INDEX alert_history_rule ON alert_history (rule_id, at_ms);
