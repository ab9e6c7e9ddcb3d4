//! Shutdown as every background task sees it: a `watch` channel whose value turns `true` once.
//! It sits below all layers so any task can stop on it.

/// Resolves once `shutdown` says stop (or its sender is gone).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
