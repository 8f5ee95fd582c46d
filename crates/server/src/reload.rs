//! Re-reading files while the process serves (TLS certificates, the tokens file): one loop, so
//! both keep the old contents on a bad read and log a problem when it appears or changes, not at
//! every tick while it lasts.

use std::time::Duration;

use tokio::sync::watch;

/// Calls `reload` every `period` (first after one period) on a blocking thread until `stop`
/// turns true. `reload` says whether anything changed; `reloaded` and `failed` log it.
pub async fn every<R>(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    reload: R,
    reloaded: impl Fn(),
    failed: impl Fn(&str),
) where
    R: Fn() -> Result<bool, String> + Clone + Send + 'static,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let r = reload.clone();
        match tokio::task::spawn_blocking(r).await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(changed) => {
                if changed {
                    reloaded();
                }
                last_error = None;
            }
            Err(e) if last_error.as_ref() != Some(&e) => {
                failed(&e);
                last_error = Some(e);
            }
            Err(_) => {}
        }
    }
}
