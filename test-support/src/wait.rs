//! Waiting for a condition with a deadline: the only way these tests synchronise
//! with the fleet (never a fixed sleep).

use std::future::Future;
use std::time::Duration;

use kmirror_common::backoff::doubling;
use tokio::time::Instant;

/// First pause between two checks; it doubles up to [`MAX_POLL_INTERVAL`].
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(50);
pub const MAX_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Checks `condition` until it returns `Ok(value)` (then returns the value) or
/// `timeout` passes.
///
/// `condition` returns `Err(state)` while it does not hold, with `state` describing
/// where things stand ("12 000 of 100 000 records"); on timeout the error names
/// `what` was awaited and the last state seen.
pub async fn wait_until<T, Condition, Check>(
    timeout: Duration,
    what: &str,
    mut condition: Condition,
) -> Result<T, String>
where
    Condition: FnMut() -> Check,
    Check: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut poll_intervals = doubling(FIRST_POLL_INTERVAL, MAX_POLL_INTERVAL);
    loop {
        let last_state = match condition().await {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}; last state: {last_state}"
            ));
        }
        let poll_interval = poll_intervals.next().unwrap_or(MAX_POLL_INTERVAL);
        tokio::time::sleep(poll_interval.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_condition_holds() {
        let mut checks = 0;
        let result = wait_until(Duration::from_secs(10), "three checks", || {
            checks += 1;
            let current = checks;
            async move {
                if current >= 3 {
                    Ok(())
                } else {
                    Err(format!("{current} checks"))
                }
            }
        })
        .await;
        assert_eq!(result, Ok(()));
        assert_eq!(checks, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_what_and_the_last_state() {
        let error = wait_until(Duration::from_secs(2), "the impossible", || async {
            Err::<(), _>("still nothing".to_string())
        })
        .await
        .unwrap_err();
        assert!(error.contains("the impossible"), "{error}");
        assert!(error.contains("still nothing"), "{error}");
    }
}
