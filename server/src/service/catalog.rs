//! What every customer page reads and admins rarely change: the preference center's settings,
//! the topics, the custom fields and the consent purposes, kept in memory for a moment.
//!
//! A page view would otherwise spend half of its statements on them. Writes through this
//! process's services forget the copy at once; another process sharing the database sees a
//! change within [`FRESH_FOR`], which is short enough for a page that people open from an email.
//! Write paths never use this copy: they read inside their own transaction.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::Services;
use crate::{
    domain::{consent::Purpose, field::FieldDefinition, preferences::PreferenceCenter, topic::Topic},
    store,
};

const FRESH_FOR: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Catalog {
    pub settings: PreferenceCenter,
    pub topics: Vec<Topic>,
    pub fields: Vec<FieldDefinition>,
    pub purposes: Vec<Purpose>,
}

#[derive(Default)]
pub(crate) struct CatalogCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    kept: Option<(Instant, Arc<Catalog>)>,
    /// Counts the changes made through this process, so that a read that began before one is
    /// not kept after it.
    changes: u64,
}

impl CatalogCache {
    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fresh(&self) -> Result<Arc<Catalog>, u64> {
        let state = self.state();
        match &state.kept {
            Some((read_at, catalog)) if read_at.elapsed() < FRESH_FOR => Ok(Arc::clone(catalog)),
            _ => Err(state.changes),
        }
    }

    fn keep(&self, read_at: Instant, changes_before: u64, catalog: Arc<Catalog>) {
        let mut state = self.state();
        let newer_kept = state.kept.as_ref().is_some_and(|(kept_at, _)| *kept_at > read_at);
        if state.changes == changes_before && !newer_kept {
            state.kept = Some((read_at, catalog));
        }
    }

    pub(crate) fn forget(&self) {
        let mut state = self.state();
        state.kept = None;
        state.changes += 1;
    }
}

impl Services {
    /// The catalog as it was at most [`FRESH_FOR`] ago (or after this process last changed it).
    pub async fn catalog(&self) -> super::Result<Arc<Catalog>> {
        let changes_before = match self.catalog.fresh() {
            Ok(catalog) => return Ok(catalog),
            Err(changes) => changes,
        };
        let read_at = Instant::now();
        let conn = self.db.connection();
        let catalog = Arc::new(Catalog {
            settings: store::preferences::get(conn).await?,
            topics: store::topics::all(conn).await?,
            fields: store::fields::all(conn).await?,
            purposes: store::consents::purposes(conn).await?,
        });
        self.catalog.keep(read_at, changes_before, Arc::clone(&catalog));
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(company: &str) -> Arc<Catalog> {
        let settings = PreferenceCenter { company_name: company.to_owned(), ..PreferenceCenter::default() };
        Arc::new(Catalog { settings, topics: Vec::new(), fields: Vec::new(), purposes: Vec::new() })
    }

    #[test]
    fn a_kept_copy_serves_until_this_process_changes_the_catalog() {
        let cache = CatalogCache::default();
        let changes = cache.fresh().unwrap_err();
        cache.keep(Instant::now(), changes, catalog("first"));
        assert_eq!(cache.fresh().unwrap().settings.company_name, "first");
        cache.forget();
        assert!(cache.fresh().is_err(), "a change is seen at once");
    }

    #[test]
    fn a_read_that_began_before_a_change_is_not_kept() {
        let cache = CatalogCache::default();
        let changes = cache.fresh().unwrap_err();
        let read_at = Instant::now();
        cache.forget();
        cache.keep(read_at, changes, catalog("stale"));
        assert!(cache.fresh().is_err());
    }

    #[test]
    fn an_older_read_does_not_replace_a_newer_copy() {
        let cache = CatalogCache::default();
        let changes = cache.fresh().unwrap_err();
        let older = Instant::now();
        cache.keep(Instant::now(), changes, catalog("newer"));
        cache.keep(older, changes, catalog("older"));
        assert_eq!(cache.fresh().unwrap().settings.company_name, "newer");
    }
}
