//! The open connections of one listener, at most its cap. A connection that has no request in
//! progress (still waiting for its request headers, or idle between requests) holds its place
//! only while nobody else needs it: when the table is full, a new connection takes the place of
//! the one idle the longest, which is asked to close. Only when every connection is busy is the
//! new one closed at once, so idle sockets can never starve callers.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Connections {
    max: usize,
    table: Mutex<Table>,
    open: IntGauge,
    evicted: IntCounter,
    refused: IntCounter,
}

/// Open connections by the order they came in.
#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Arc<Slot>>,
}

/// One connection's place: how many of its requests are in progress, and the request to close.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    busy: AtomicUsize,
    close: Notify,
}

impl Slot {
    /// Completes once the connection is asked to give up its place.
    pub(crate) async fn closing(&self) {
        self.close.notified().await;
    }
}

/// The place of an admitted connection, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    connections: Arc<Connections>,
    id: u64,
    pub(crate) slot: Arc<Slot>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut table = self
            .connections
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if table.open.remove(&self.id).is_some() {
            self.connections.open.dec();
        }
    }
}

impl Connections {
    /// At most `max` connections; `open` is their gauge, `evicted` and `refused` count the
    /// connections closed to make room and those closed for want of it.
    pub(crate) fn new(
        max: usize,
        open: IntGauge,
        evicted: IntCounter,
        refused: IntCounter,
    ) -> Arc<Self> {
        Arc::new(Self {
            max,
            table: Mutex::default(),
            open,
            evicted,
            refused,
        })
    }

    /// A place for a new connection: a free one, or the place of the connection idle the
    /// longest, which is asked to close (it no longer counts). `None` when every connection has
    /// a request in progress.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Place> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.open.len() >= self.max {
            let idle = table
                .open
                .iter()
                .find(|(_, slot)| slot.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id);
            let Some(id) = idle else {
                self.refused.inc();
                return None;
            };
            let slot = table.open.remove(&id).expect("found above");
            slot.close.notify_one();
            self.open.dec();
            self.evicted.inc();
        }
        let id = table.next;
        table.next += 1;
        let slot = Arc::new(Slot::default());
        table.open.insert(id, Arc::clone(&slot));
        self.open.inc();
        Some(Place {
            connections: Arc::clone(self),
            id,
            slot,
        })
    }
}

/// Marks the connection of `slot` busy until dropped: a request is in progress.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Slot>);

impl Busy {
    pub(crate) fn enter(slot: &Arc<Slot>) -> Self {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(slot))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// A response future whose connection counts as busy until it completes or is dropped.
    pub(crate) struct WhileBusy<F> {
        #[pin]
        inner: F,
        busy: Busy,
    }
}

impl<F> WhileBusy<F> {
    pub(crate) fn new(inner: F, busy: Busy) -> Self {
        Self { inner, busy }
    }
}

impl<F: Future> Future for WhileBusy<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> Arc<Connections> {
        Connections::new(
            max,
            IntGauge::new("open", "h").unwrap(),
            IntCounter::new("evicted", "h").unwrap(),
            IntCounter::new("refused", "h").unwrap(),
        )
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_oldest_idle_connection_and_refuses_when_all_are_busy() {
        let connections = table(2);
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        let _busy = Busy::enter(&second.slot);
        // Full: the first (idle) is asked to close and loses its place.
        let third = connections.admit().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.slot.closing())
            .await
            .expect("the idle connection is asked to close");
        assert_eq!(connections.open.get(), 2);
        assert_eq!(connections.evicted.get(), 1);
        // Both remaining are busy: a new one is refused.
        let busy_third = Busy::enter(&third.slot);
        assert!(connections.admit().is_none());
        assert_eq!(connections.refused.get(), 1);
        drop(first); // its place was already taken over: nothing changes
        assert_eq!(connections.open.get(), 2);
        drop(busy_third);
        drop(third);
        assert_eq!(connections.open.get(), 1);
        assert!(connections.admit().is_some());
    }
}
