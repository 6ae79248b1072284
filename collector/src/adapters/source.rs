//! The read side: what the API and the dashboard ask of the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use querypulse_domain::source::{
    AgentSummary, AlertSummary, InstanceBreakdown, PoolPoint, PoolSeries, PoolSummary, QueryDetail, QueryPoint,
    QuerySeries, SlowFilter, SlowQuery,
};
use querypulse_domain::source::{
    QueryFilter, QuerySummary, ServiceSummary, Source, SourceError, StoreHealth, TimeRange,
};
use querypulse_domain::{Fingerprint, QueryStats};

use querypulse_alerts::Alerts;
use querypulse_store::Store;

/// An agent is silent after this many intervals without a batch.
const SILENT_AFTER_INTERVALS: i64 = 3;

/// Answers reads from the store.
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Store,
    /// Normalized texts never change for a fingerprint: kept once read, so
    /// a summary of every fingerprint is not also a read of every text.
    texts: Arc<RwLock<HashMap<Fingerprint, String>>>,
    /// The alert engine, and the runtime its answers are awaited on.
    alerts: Option<(Alerts, tokio::runtime::Handle)>,
    /// Remote-write destinations' progress.
    remote_write: Option<crate::remote_write::Status>,
}

impl StoreSource {
    /// Reads from `store`.
    pub fn new(store: Store) -> StoreSource {
        StoreSource {
            store,
            texts: Arc::default(),
            alerts: None,
            remote_write: None,
        }
    }

    /// Also answers which alerts were active in a range, from `alerts`.
    /// Reads run on blocking threads (see [`Source`]), which wait there for
    /// the engine's answer, driven by `runtime`.
    pub fn with_alerts(mut self, alerts: Alerts, runtime: tokio::runtime::Handle) -> StoreSource {
        self.alerts = Some((alerts, runtime));
        self
    }

    /// Answers [`Source::remote_write`] from the destinations' `status`.
    pub fn with_remote_write(mut self, status: crate::remote_write::Status) -> StoreSource {
        self.remote_write = Some(status);
        self
    }

    /// The normalized text of `fingerprint` (empty when unknown).
    fn text(&self, fingerprint: Fingerprint) -> Result<String, SourceError> {
        if let Some(text) = self.texts.read().unwrap_or_else(|p| p.into_inner()).get(&fingerprint) {
            return Ok(text.clone());
        }
        let Some(text) = self.store.text(fingerprint)? else {
            return Ok(String::new());
        };
        self.texts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fingerprint, text.clone());
        Ok(text)
    }
}

fn resolution(step_ms: i64) -> &'static str {
    querypulse_store::tier_for_step(step_ms).name()
}

impl StoreSource {
    /// Services matching the filter: (name, id).
    fn services_for(&self, service: Option<&str>) -> Vec<(String, u32)> {
        self.store
            .services()
            .into_iter()
            .filter(|(name, ..)| service.is_none_or(|s| s == name))
            .map(|(name, id, ..)| (name, id))
            .collect()
    }
}

impl Source for StoreSource {
    fn services(&self) -> Result<Vec<ServiceSummary>, SourceError> {
        let mut by_service: HashMap<String, (usize, i64)> = HashMap::new();
        for instance in self.store.instances() {
            let entry = by_service.entry(instance.service).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(instance.last_seen_ms);
        }
        Ok(self
            .store
            .services()
            .into_iter()
            .map(|(name, _, fingerprints, overflow_fingerprints)| {
                let (instances, last_seen_ms) = by_service.get(&name).copied().unwrap_or((0, 0));
                ServiceSummary {
                    name,
                    instances,
                    last_seen_ms,
                    fingerprints,
                    overflow_fingerprints,
                }
            })
            .collect())
    }

    fn queries(&self, filter: &QueryFilter) -> Result<Vec<QuerySummary>, SourceError> {
        let mut summaries = Vec::new();
        for (name, id) in self.services_for(filter.service.as_deref()) {
            for stats in self.store.query_stats(id, filter.range.from_ms, filter.range.to_ms)? {
                let text = self.text(stats.fingerprint)?;
                summaries.push(QuerySummary::new(name.clone(), text, &stats));
            }
        }
        Ok(summaries)
    }

    fn query_detail(&self, fingerprint: Fingerprint, filter: &QueryFilter) -> Result<Option<QueryDetail>, SourceError> {
        let services: Vec<(String, u32)> = self
            .store
            .services_of(fingerprint)
            .into_iter()
            .filter(|(name, _)| filter.service.as_ref().is_none_or(|s| s == name))
            .collect();
        if services.is_empty() {
            return Ok(None);
        }
        let TimeRange { from_ms, to_ms } = filter.range;
        let text = self.text(fingerprint)?;
        let mut summaries = Vec::new();
        let mut instances = Vec::new();
        for (name, id) in services {
            if let Some(stats) = self.store.query(id, fingerprint, from_ms, to_ms)?
                && stats.calls > 0
            {
                summaries.push(QuerySummary::new(name.clone(), text.clone(), &stats));
            }
            for (instance, q) in self.store.instance_breakdown(&name, fingerprint, from_ms, to_ms)? {
                instances.push(InstanceBreakdown::new(
                    name.clone(),
                    instance.instance_id,
                    instance.host,
                    q.calls,
                    q.errors,
                    q.sum_us,
                    q.min_us,
                    q.max_us,
                ));
            }
        }
        instances.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        Ok(Some(QueryDetail {
            fingerprint,
            text,
            services: summaries,
            instances,
        }))
    }

    fn query_series(
        &self,
        fingerprint: Fingerprint,
        filter: &QueryFilter,
        step_ms: i64,
    ) -> Result<Option<QuerySeries>, SourceError> {
        let services: Vec<u32> = self
            .store
            .services_of(fingerprint)
            .into_iter()
            .filter(|(name, _)| filter.service.as_ref().is_none_or(|s| s == name))
            .map(|(_, id)| id)
            .collect();
        if services.is_empty() {
            return Ok(None);
        }
        let mut steps: std::collections::BTreeMap<i64, QueryStats> = std::collections::BTreeMap::new();
        for service in services {
            for (start, stats) in
                self.store
                    .query_steps(service, fingerprint, filter.range.from_ms, filter.range.to_ms, step_ms)?
            {
                match steps.get_mut(&start) {
                    Some(existing) => existing.merge(&stats),
                    None => {
                        steps.insert(start, stats);
                    }
                }
            }
        }
        let points = steps
            .iter()
            .map(|(start, stats)| QueryPoint::new(*start, stats))
            .collect();
        Ok(Some(QuerySeries {
            resolution: resolution(step_ms),
            step_ms,
            points,
        }))
    }

    fn pools(&self, range: TimeRange) -> Result<Vec<PoolSummary>, SourceError> {
        Ok(self
            .store
            .pools(range.from_ms, range.to_ms)?
            .into_iter()
            .map(|p| PoolSummary::new(p.service, p.instance_id, &p.stats, p.health.as_ref(), p.last_window_ms))
            .collect())
    }

    fn pool_series(
        &self,
        service: &str,
        instance_id: &str,
        pool: &str,
        range: TimeRange,
        step_ms: i64,
    ) -> Result<Option<PoolSeries>, SourceError> {
        if self
            .store
            .instances()
            .iter()
            .all(|i| i.instance_id != instance_id || i.service != service)
        {
            return Ok(None);
        }
        let Some((pools, health)) = self
            .store
            .pool_steps(instance_id, pool, range.from_ms, range.to_ms, step_ms)?
        else {
            return Ok(None);
        };
        let health: HashMap<i64, _> = health.into_iter().collect();
        let points = pools
            .iter()
            .map(|(start, p)| PoolPoint::new(*start, p, health.get(start)))
            .collect();
        Ok(Some(PoolSeries {
            resolution: resolution(step_ms),
            step_ms,
            points,
        }))
    }

    fn slow_queries(&self, filter: &SlowFilter) -> Result<Vec<SlowQuery>, SourceError> {
        let service = match &filter.service {
            Some(name) => match self.store.service_id(name) {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let samples = self.store.slow_samples(
            service,
            filter.fingerprint,
            filter.range.from_ms,
            filter.range.to_ms,
            filter.limit,
        )?;
        let mut out = Vec::with_capacity(samples.len());
        for s in samples {
            let text = self.text(s.sample.fingerprint)?;
            out.push(SlowQuery {
                at_ms: s.sample.at_ms,
                service: s.service,
                instance_id: s.instance_id,
                fingerprint: s.sample.fingerprint,
                text,
                duration_ms: s.sample.duration_us as f64 / 1_000.0,
                rows: s.sample.rows,
                error_class: s.sample.error_class,
                pool: s.sample.pool,
                raw_text: s.sample.raw_text,
            });
        }
        Ok(out)
    }

    fn store_health(&self) -> Result<Option<StoreHealth>, SourceError> {
        let memtable = self.store.memtable_stats();
        Ok(Some(StoreHealth {
            memtable_bytes: memtable.bytes,
            memtable_limit_bytes: self.store.limits().memtable_bytes as u64,
            memtable_windows: memtable.windows,
            flushes: memtable.flushes,
            early_flushes: memtable.early_flushes,
            stalls: memtable.stalls,
            disk_bytes: self.store.disk_bytes(),
            disk_free_bytes: self.store.free_disk_bytes().unwrap_or(0),
            problems: self.store.problems(),
        }))
    }

    fn agents(&self) -> Result<Vec<AgentSummary>, SourceError> {
        let now = querypulse_domain::now_ms();
        Ok(self
            .store
            .instances()
            .into_iter()
            .map(|i| {
                let interval = i64::from(i.interval_ms.max(1_000));
                AgentSummary {
                    silent: now - i.last_seen_ms > SILENT_AFTER_INTERVALS * interval,
                    service: i.service,
                    instance_id: i.instance_id,
                    host: i.host,
                    pid: i.pid,
                    agent_version: i.agent_version,
                    db_system: i.db_system,
                    labels: i.labels,
                    started_at_ms: i.started_at_ms,
                    first_seen_ms: i.first_seen_ms,
                    last_seen_ms: i.last_seen_ms,
                    interval_ms: i.interval_ms,
                    batches: i.batches,
                    counters: i.counters,
                }
            })
            .collect())
    }

    fn remote_write(&self) -> Result<Vec<querypulse_domain::source::RemoteWriteStatus>, SourceError> {
        Ok(self.remote_write.as_ref().map(|s| s.snapshot()).unwrap_or_default())
    }

    fn alerts(&self, range: TimeRange) -> Result<Option<Vec<AlertSummary>>, SourceError> {
        let Some((alerts, runtime)) = &self.alerts else {
            return Ok(None);
        };
        runtime
            .block_on(alerts.in_range(range, querypulse_domain::now_ms()))
            .map(Some)
            .map_err(|e| SourceError(e.to_string()))
    }
}
