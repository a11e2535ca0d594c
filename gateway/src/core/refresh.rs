//! The core's background refresh: poll the store for changes made here, by the CLI or by
//! another node; close the tunnels of revoked registrations; count registration and key
//! events; keep the connected-agents gauge current. Wings that care about credential changes
//! (the public TCP ports) follow [`super::auth::AuthCache::subscribe`].

use std::collections::HashSet;
use std::sync::Arc;

use super::auth::{AuthSnapshot, REFRESH_INTERVAL};
use super::metrics::Metrics;
use super::Core;
use crate::shutdown::Phase;

/// Refresh until the gateway aborts.
/// Woken early by the store's change notifications where it has them (PostgreSQL); the poll
/// every [`REFRESH_INTERVAL`] stays, for the notifications that are lost.
pub async fn refresh_loop(core: Arc<Core>) {
    let mut seen = core.auth.snapshot();
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = core.shutdown.reached(Phase::Aborting);
    tokio::pin!(stop);
    let wake = Arc::new(tokio::sync::Notify::new());
    let listening = tokio_util::sync::CancellationToken::new();
    core.store.watch_changes(wake.clone(), listening.clone());
    let _stop_listening = listening.drop_guard();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = &mut stop => return,
        }
        if let Err(e) = core.auth.refresh_if_changed().await {
            // A stale snapshot may lack a registration made a moment ago: close nothing on
            // its word.
            tracing::warn!(error = %e, "store poll failed");
            core.metrics.db_errors.with_label_values(&["poll"]).inc();
        } else {
            let snap = core.auth.snapshot();
            if snap.version != seen.version {
                core.metrics.credentials_applied.inc();
                if let Ok(Some(age)) = core.store.change_age().await {
                    core.metrics.credentials_delay.observe(age.as_secs_f64());
                }
                count_events(&core.metrics, &seen, &snap);
                seen = snap.clone();
            }
            core.registry
                .close_unless(|id| snap.registrations.contains_key(id));
        }
        core.metrics
            .agents_connected
            .set(core.registry.len() as i64);
    }
}

/// Count registrations and keys that appeared or disappeared between two snapshots.
fn count_events(m: &Metrics, old: &AuthSnapshot, new: &AuthSnapshot) {
    fn diff<'a>(counter: &prometheus::IntCounterVec, old: HashSet<&'a str>, new: HashSet<&'a str>) {
        let created = new.difference(&old).count() as u64;
        let revoked = old.difference(&new).count() as u64;
        if created > 0 {
            counter.with_label_values(&["created"]).inc_by(created);
        }
        if revoked > 0 {
            counter.with_label_values(&["revoked"]).inc_by(revoked);
        }
    }
    diff(
        &m.registration_events,
        old.registrations.keys().map(String::as_str).collect(),
        new.registrations.keys().map(String::as_str).collect(),
    );
    diff(
        &m.key_events,
        old.key_ids().collect(),
        new.key_ids().collect(),
    );
}
