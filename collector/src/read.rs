//! The read side: what the API and the dashboard ask of the store.

use std::collections::HashMap;

use querypulse_web::{QueryFilter, QuerySummary, ServiceSummary, Source, SourceError};

use crate::store::{Store, StoreError};

/// Answers reads from the store.
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Store,
}

impl StoreSource {
    /// Reads from `store`.
    pub fn new(store: Store) -> StoreSource {
        StoreSource { store }
    }
}

impl From<StoreError> for SourceError {
    fn from(error: StoreError) -> Self {
        SourceError(error.to_string())
    }
}

impl Source for StoreSource {
    fn services(&self) -> Result<Vec<ServiceSummary>, SourceError> {
        let mut by_service: HashMap<String, (usize, i64)> = HashMap::new();
        for instance in self.store.instances()? {
            let entry = by_service.entry(instance.service).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(instance.last_seen_ms);
        }
        Ok(self
            .store
            .services()?
            .into_iter()
            .map(|service| {
                let (instances, last_seen_ms) = by_service.get(&service.name).copied().unwrap_or((0, 0));
                ServiceSummary {
                    name: service.name,
                    instances,
                    last_seen_ms,
                }
            })
            .collect())
    }

    fn queries(&self, filter: &QueryFilter) -> Result<Vec<QuerySummary>, SourceError> {
        let services = self.store.services()?;
        let mut summaries = Vec::new();
        for service in services
            .into_iter()
            .filter(|s| filter.service.as_ref().is_none_or(|name| *name == s.name))
        {
            for fingerprint in self.store.fingerprints(service.id)? {
                let stats =
                    self.store
                        .query_range(service.id, fingerprint, filter.range.from_ms, filter.range.to_ms)?;
                if stats.calls == 0 {
                    continue;
                }
                let text = self.store.text(fingerprint)?.unwrap_or_default();
                summaries.push(QuerySummary::new(service.name.clone(), text, &stats));
            }
        }
        Ok(summaries)
    }
}
