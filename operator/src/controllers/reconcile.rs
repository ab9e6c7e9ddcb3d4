//! What every reconcile does around its own steps, the same for both controllers: a span
//! naming the object, metrics, the stand-down (see `Error::stands_down`), and the failure
//! count behind the backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::Resource;
use tracing::{Instrument, Span};

use super::{object_key, stand_down_or, Context, Error};

/// A resource kind one of the controllers reconciles.
pub trait Reconciled: Resource<DynamicType = ()> + Send + Sync + 'static {
    /// Controller name in metrics and logs.
    const CONTROLLER: &'static str;

    /// The span of one reconcile of this object: its name and namespace.
    fn reconcile_span(&self) -> Span;

    /// Log a failed reconcile that is retried in `retry_in`.
    fn log_failure(&self, error: &Error, retry_in: Duration);

    /// The controller's own steps for this object.
    fn reconcile(
        self: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send;
}

/// Reconcile one object, recording metrics and resetting the backoff on success.
pub async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = obj.reconcile_span();
    async move {
        let start = Instant::now();
        let key = object_key(obj.as_ref());
        let result = stand_down_or(K::reconcile(obj, ctx.clone()).await, &key);
        ctx.metrics.observe(
            K::CONTROLLER,
            start.elapsed(),
            result.as_ref().err().map(Error::kind),
        );
        if result.is_ok() {
            ctx.record_success(&key);
        }
        result
    }
    .instrument(span)
    .await
}

/// Retry a failed reconcile with exponential backoff.
pub fn error_policy<K: Reconciled>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.record_failure(&object_key(obj.as_ref()));
    obj.log_failure(error, delay);
    Action::requeue(delay)
}
