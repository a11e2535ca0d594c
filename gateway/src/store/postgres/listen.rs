//! The PostgreSQL store's change notifications: a task that `LISTEN`s on [`CHANGES_CHANNEL`]
//! and wakes the node's credential refresh at each `NOTIFY` (sent by every write's commit), so a
//! revocation through any node is applied everywhere without waiting for the next poll. On a
//! lost connection it connects again with jittered backoff; the poll covers what was missed.

use std::sync::Arc;
use std::time::Duration;

use g2c_proto::backoff::Backoff;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::CHANGES_CHANNEL;

/// Listen on `pool`'s server until `stop`, waking `wake` at every notification and after
/// every (re)connect (a change may have come while no one listened).
pub(super) fn spawn(pool: PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    let listening = async move { stop.run_until_cancelled(listen(pool, wake)).await };
    tokio::spawn(tracing::Instrument::instrument(
        listening,
        tracing::info_span!("store_listen"),
    ));
}

async fn listen(pool: PgPool, wake: Arc<Notify>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => {
                tracing::debug!("listening for state changes");
                backoff.reset();
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        Ok(None) => break, // connection lost; sqlx would reconnect silently
                        Err(e) => {
                            tracing::warn!(error = %e, "change notifications lost");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for state changes"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
