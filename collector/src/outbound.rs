//! The collector's client for its own outbound HTTP (the `report` and
//! `verify --url` commands; tests use it too). Every outbound call in the
//! product is reqwest on rustls with ring: alert notifications
//! (`querypulse_alerts::HttpClient`), Prometheus remote write (the load
//! generator) and these.

/// A reqwest client with the default settings; see [`http_client_builder`].
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("a client with default settings builds")
}

/// A reqwest client builder; installs ring as the process's TLS provider
/// first if none is (reqwest is built without a provider of its own).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
