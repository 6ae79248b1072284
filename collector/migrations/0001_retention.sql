-- Retention settings of the store: one row, written by PUT /api/v1/retention.
CREATE TABLE retention (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    raw_seconds INTEGER NOT NULL CHECK (raw_seconds > 0),
    minute_seconds INTEGER NOT NULL CHECK (minute_seconds > 0),
    hour_seconds INTEGER NOT NULL CHECK (hour_seconds > 0),
    max_bytes INTEGER CHECK (max_bytes IS NULL OR max_bytes > 0),
    updated_at_ms INTEGER NOT NULL
);
