//! What a session's pump waits on besides its two sockets: changes of the
//! router (table, state, shutdown), published on the router's change watch,
//! and the disconnect deadline of a session that must close.
//!
//! The pump keeps one control future ([`next_change`]) for its whole life
//! and polls it through [`poll_control`] only when the watch moved, so a
//! busy session costs one atomic load per wake-up; [`sleep_until_opt`] is
//! the deadline branch, pending while there is none.

use tokio::sync::watch;
use tokio::time::Instant;

/// Polls the session's control future only when it has never been polled
/// (so it registers with the watch) or the watch's version moved past what
/// `probe` has seen (a lock-free load); otherwise the registered waiter
/// wakes the task when a change comes.
pub(crate) async fn poll_control<F: std::future::Future>(
    mut control: std::pin::Pin<&mut F>,
    armed: &mut bool,
    probe: &watch::Receiver<u64>,
) -> F::Output {
    std::future::poll_fn(|cx| {
        if *armed && matches!(probe.has_changed(), Ok(false)) {
            return std::task::Poll::Pending;
        }
        let r = control.as_mut().poll(cx);
        *armed = r.is_pending();
        r
    })
    .await
}

/// Waits for the next change of the routing table, the router state or
/// shutdown (all bump the router's change watch) and hands the receiver
/// back; `false` (and no receiver) once the router is gone.
pub(crate) async fn next_change(
    changes: Option<watch::Receiver<u64>>,
) -> (bool, Option<watch::Receiver<u64>>) {
    let Some(mut rx) = changes else {
        return std::future::pending().await;
    };
    match rx.changed().await {
        Ok(()) => (true, Some(rx)),
        Err(_) => (false, None),
    }
}

pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
