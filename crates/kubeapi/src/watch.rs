//! `?watch=true`: a datastore watch turned into Kubernetes watch events (ADDED, MODIFIED,
//! DELETED, BOOKMARK, ERROR), one JSON object per line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gingham_datastore::{Datastore, Event, EventKind};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::decorate;
use crate::discovery::View;
use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// How long a watch with bookmarks stays quiet before it sends one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// How often a blocked watch looks whether its client left or the server stops.
const POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// resourceVersion unset or "0" (or sendInitialEvents): the current objects as ADDED
    /// events, then changes.
    Initial,
    /// Changes after this revision.
    After(i64),
}

/// A watch request, parsed.
pub struct WatchPlan {
    pub res: Resource,
    pub prefix: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Set when a single object is watched (`fieldSelector=metadata.name=` is the usual way;
    /// this is the path form).
    pub name: Option<String>,
    pub start: WatchStart,
    pub bookmarks: bool,
    /// sendInitialEvents: end the initial events with a bookmark annotated
    /// `k8s.io/initial-events-end`.
    pub initial_end_bookmark: bool,
    pub timeout: Duration,
    /// Full objects, Table rows (kubectl get --watch) or metadata only.
    pub view: View,
}

impl WatchPlan {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&obj["metadata"]["labels"])
            && self.fields.matches(obj)
            && self
                .name
                .as_deref()
                .is_none_or(|n| obj["metadata"]["name"].as_str() == Some(n))
    }
}

/// An event line with the object in the plan's view.
fn event(plan: &WatchPlan, kind: &str, object: Value) -> Vec<u8> {
    let rv = object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    line(kind, plan.view.object(&plan.res, rv, object))
}

fn line(kind: &str, object: Value) -> Vec<u8> {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    v
}

fn bookmark(res: &Resource, rv: i64, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta}),
    )
}

fn error_line(e: &ApiError) -> Vec<u8> {
    line("ERROR", e.status())
}

/// Runs one watch on the calling (blocking) thread, sending lines until the client leaves, the
/// timeout passes, the server stops or the datastore watch fails.
pub fn run(
    store: Arc<dyn Datastore>,
    plan: WatchPlan,
    tx: mpsc::Sender<Vec<u8>>,
    stopping: Arc<AtomicBool>,
) {
    let deadline = Instant::now() + plan.timeout;
    let send = |bytes: Vec<u8>| tx.blocking_send(bytes).is_ok();
    let mut last = match plan.start {
        WatchStart::After(rv) => rv,
        WatchStart::Initial => {
            let listing = match store.list(&plan.prefix) {
                Ok(l) => l,
                Err(e) => {
                    send(error_line(&e.into()));
                    return;
                }
            };
            for kv in &listing.kvs {
                match decorate(&plan.res, kv) {
                    Ok(obj) if plan.matches(&obj) => {
                        if !send(event(&plan, "ADDED", obj)) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(key = %kv.key, error = %e.message, "skipped"),
                }
            }
            if plan.initial_end_bookmark && !send(bookmark(&plan.res, listing.revision, true)) {
                return;
            }
            listing.revision
        }
    };
    let mut watch = match store.watch(&plan.prefix, last) {
        Ok(w) => w,
        Err(e) => {
            send(error_line(&e.into()));
            return;
        }
    };
    let mut quiet_since = Instant::now();
    loop {
        if stopping.load(Ordering::Relaxed) || tx.is_closed() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match watch.next(POLL.min(left)) {
            Ok(Some(ev)) => {
                last = ev.revision();
                if let Some(bytes) = translate(&plan, &ev) {
                    if !send(bytes) {
                        return;
                    }
                    quiet_since = Instant::now();
                }
            }
            Ok(None) => {}
            Err(e) => {
                send(error_line(&e.into()));
                return;
            }
        }
        if plan.bookmarks && quiet_since.elapsed() >= BOOKMARK_INTERVAL {
            if !send(bookmark(&plan.res, last, false)) {
                return;
            }
            quiet_since = Instant::now();
        }
    }
}

/// One datastore event as the watch event this client sees, if any: an object that starts
/// matching the selectors is ADDED, one that stops matching is DELETED.
fn translate(plan: &WatchPlan, ev: &Event) -> Option<Vec<u8>> {
    let prev = ev.prev.as_ref().and_then(|p| decorate(&plan.res, p).ok());
    match ev.kind {
        EventKind::Delete => {
            let mut obj = prev?;
            if !plan.matches(&obj) {
                return None;
            }
            obj["metadata"]["resourceVersion"] = json!(ev.revision().to_string());
            Some(event(plan, "DELETED", obj))
        }
        EventKind::Put => {
            let obj = decorate(&plan.res, &ev.kv).ok()?;
            let now = plan.matches(&obj);
            let created = ev.kv.create_revision == ev.kv.mod_revision;
            let before = if created {
                Some(false)
            } else {
                prev.as_ref().map(|p| plan.matches(p))
            };
            match (before, now) {
                (Some(false), true) => Some(event(plan, "ADDED", obj)),
                (Some(true), true) | (None, true) => Some(event(plan, "MODIFIED", obj)),
                (Some(true), false) => Some(event(plan, "DELETED", obj)),
                (_, false) => None,
            }
        }
    }
}
