//! The open connections of one listener, at most its cap. A connection is busy from the moment
//! its request head is read until its response is sent, body and all (an event stream's too).
//! One that is not (still sending its request head, or idle between requests) holds its place
//! only while nobody else needs it: when the table is full, a new connection takes the place of
//! the one idle the longest, which is asked to close. Only when every connection is busy is the
//! new one closed at once, so idle sockets can never starve callers. And one that stays idle for
//! `server.header_read_timeout` is closed: the table's sweep, ticking ten times per timeout, is
//! the clock, so the request path marks a connection idle without reading a clock or arming a
//! timer.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus::{IntCounter, IntGauge};

/// Sweeps per idle timeout: a connection idle that long is closed within a tenth of it more.
const SWEEPS_PER_TIMEOUT: u32 = 10;

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Connections {
    max: usize,
    table: Mutex<Table>,
    clock: Arc<IdleClock>,
    open: IntGauge,
    evicted: IntCounter,
    refused: IntCounter,
}

/// The counters of the connections a listener closes, by why.
#[derive(Debug)]
pub(crate) struct Closed {
    /// Idle, for a new connection.
    pub(crate) evicted: IntCounter,
    /// New, every other one busy.
    pub(crate) refused: IntCounter,
    /// Idle for `server.header_read_timeout`.
    pub(crate) timed_out: IntCounter,
}

/// Open connections by the order they came in.
#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Arc<Slot>>,
}

/// The table's coarse clock: the number of sweeps so far.
#[derive(Debug)]
struct IdleClock {
    ticks: AtomicU64,
    timed_out: IntCounter,
}

impl IdleClock {
    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }
}

/// One connection's place: how many of its requests are in progress, since when it has had
/// none, and what its task is asked to do.
#[derive(Debug)]
pub(crate) struct Slot {
    busy: AtomicUsize,
    /// The tick at which it last became idle (admitted, or its last response sent).
    idle_since: AtomicU64,
    clock: Arc<IdleClock>,
    /// What the connection's task has been asked and not yet seen: [`Asked`]'s bits.
    asked: AtomicU8,
    /// The connection's task, woken when asked. Not a `tokio::sync::Notify`: its `Notified`
    /// takes a lock every time it is polled, and the task polls this at every wake-up, that is
    /// for every request (BENCHMARKS.md).
    task: AtomicWaker,
}

/// What a connection's task is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked(u8);

impl Asked {
    /// Give up its place: finish the request in progress, if any, and close (evicted for a new
    /// connection, or the listener stops).
    const CLOSE: u8 = 1;
    /// Close if still idle: the sweep found it idle for `header_read_timeout`.
    const EXPIRE: u8 = 2;

    pub(crate) fn to_close(self) -> bool {
        self.0 & Self::CLOSE != 0
    }

    pub(crate) fn to_expire(self) -> bool {
        self.0 & Self::EXPIRE != 0
    }
}

impl Slot {
    fn new(clock: &Arc<IdleClock>) -> Self {
        Self {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(clock.now()),
            clock: Arc::clone(clock),
            asked: AtomicU8::new(0),
            task: AtomicWaker::new(),
        }
    }

    fn ask(&self, what: u8) {
        self.asked.fetch_or(what, Ordering::Release);
        self.task.wake();
    }

    /// Completes with what the connection has been asked since the last time (asked twice the
    /// same, it is told once). Its task is woken when asked while this waits.
    pub(crate) fn asked(&self) -> impl Future<Output = Asked> + '_ {
        std::future::poll_fn(|cx| {
            // Nothing asked, as at nearly every wake-up: two loads and the registration, which
            // keeps the waker it has when it is the same (no lock, no clone).
            if self.asked.load(Ordering::Acquire) == 0 {
                self.task.register(cx.waker());
                // Asked in between: `ask` sets the bits before it wakes.
                if self.asked.load(Ordering::Acquire) == 0 {
                    return Poll::Pending;
                }
            }
            Poll::Ready(Asked(self.asked.swap(0, Ordering::AcqRel)))
        })
    }

    /// Whether the connection has been idle for more than `SWEEPS_PER_TIMEOUT` whole ticks:
    /// checked again by the connection's own task, which alone starts and ends its requests.
    fn expired(&self) -> bool {
        // Saturating: another thread may have stored a tick this one has not seen yet.
        self.busy.load(Ordering::Acquire) == 0
            && self
                .clock
                .now()
                .saturating_sub(self.idle_since.load(Ordering::Acquire))
                > u64::from(SWEEPS_PER_TIMEOUT)
    }

    /// Whether the connection has been idle too long; if so, it is counted as closed for it.
    pub(crate) fn close_if_expired(&self) -> bool {
        self.count_timed_out(self.expired())
    }

    /// Whether the connection is idle; if so, it is counted as closed for being idle too long
    /// (asked to close a timeout ago, it still has not sent a request head).
    pub(crate) fn close_if_idle(&self) -> bool {
        self.count_timed_out(self.busy.load(Ordering::Acquire) == 0)
    }

    fn count_timed_out(&self, closes: bool) -> bool {
        if closes {
            self.clock.timed_out.inc();
        }
        closes
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
    /// At most `max` connections; `open` is their gauge, `closed` counts those closed and why.
    pub(crate) fn new(max: usize, open: IntGauge, closed: Closed) -> Arc<Self> {
        Arc::new(Self {
            max,
            table: Mutex::default(),
            clock: Arc::new(IdleClock {
                ticks: AtomicU64::new(0),
                timed_out: closed.timed_out,
            }),
            open,
            evicted: closed.evicted,
            refused: closed.refused,
        })
    }

    /// How often [`Connections::sweep`] must run for connections idle for `timeout` to close.
    pub(crate) fn sweep_every(timeout: Duration) -> Duration {
        timeout / SWEEPS_PER_TIMEOUT
    }

    /// Advances the clock one tick and asks each connection idle for longer than the timeout
    /// to close at once.
    pub(crate) fn sweep(&self) {
        self.clock.ticks.fetch_add(1, Ordering::AcqRel);
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in table.open.values().filter(|slot| slot.expired()) {
            slot.ask(Asked::EXPIRE);
        }
    }

    /// Asks every connection to close after the request it has in progress: the listener stops.
    pub(crate) fn close_all(&self) {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in table.open.values() {
            slot.ask(Asked::CLOSE);
        }
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
                .filter(|(_, slot)| slot.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, slot)| slot.idle_since.load(Ordering::Acquire))
                .map(|(id, _)| *id);
            let Some(id) = idle else {
                self.refused.inc();
                return None;
            };
            let slot = table.open.remove(&id).expect("found above");
            slot.ask(Asked::CLOSE);
            self.open.dec();
            self.evicted.inc();
        }
        let id = table.next;
        table.next += 1;
        let slot = Arc::new(Slot::new(&self.clock));
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
        let slot = &self.0;
        if slot.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            slot.idle_since.store(slot.clock.now(), Ordering::Release);
        }
    }
}

pin_project! {
    /// A response future whose connection counts as busy until the response it gives is sent.
    pub(crate) struct WhileBusy<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F> WhileBusy<F> {
    pub(crate) fn new(inner: F, busy: Busy) -> Self {
        Self {
            inner,
            busy: Some(busy),
        }
    }
}

impl<F, B, E> Future for WhileBusy<F>
where
    F: Future<Output = Result<hyper::Response<B>, E>>,
{
    type Output = Result<hyper::Response<BusyBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let busy = this.busy.take();
        Poll::Ready(Ok(response.map(|inner| BusyBody { inner, busy })))
    }
}

pin_project! {
    /// A response body whose connection counts as busy until it is sent (and dropped).
    pub(crate) struct BusyBody<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
    }
}

impl<B: Body> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn table(max: usize) -> Arc<Connections> {
        Connections::new(
            max,
            IntGauge::new("open", "h").unwrap(),
            Closed {
                evicted: IntCounter::new("evicted", "h").unwrap(),
                refused: IntCounter::new("refused", "h").unwrap(),
                timed_out: IntCounter::new("timed_out", "h").unwrap(),
            },
        )
    }

    /// What `slot` has been asked since the last call, without waiting: `None` if nothing.
    fn asked_now(slot: &Slot) -> Option<Asked> {
        slot.asked().now_or_never()
    }

    /// Whether `slot` has been asked to close for idling (without waiting).
    fn asked_to_expire(slot: &Slot) -> bool {
        asked_now(slot).is_some_and(Asked::to_expire)
    }

    #[test]
    fn a_connection_idle_for_more_than_ten_sweeps_is_asked_to_close_and_a_busy_one_never() {
        let connections = table(4);
        let idle = connections.admit().unwrap();
        let busy = connections.admit().unwrap();
        let request = Busy::enter(&busy.slot);
        for _ in 0..SWEEPS_PER_TIMEOUT {
            connections.sweep();
        }
        // Ten ticks: between nine and ten sweep periods idle, possibly short of the timeout.
        assert!(!asked_to_expire(&idle.slot));
        connections.sweep();
        assert!(asked_to_expire(&idle.slot));
        assert!(idle.slot.close_if_expired());
        assert_eq!(connections.clock.timed_out.get(), 1);
        assert!(!asked_to_expire(&busy.slot));
        assert!(!busy.slot.close_if_expired());
        // Its request ends: idle from now on, for as long again.
        drop(request);
        for _ in 0..SWEEPS_PER_TIMEOUT {
            connections.sweep();
        }
        assert!(!asked_to_expire(&busy.slot));
        connections.sweep();
        assert!(asked_to_expire(&busy.slot));
        assert_eq!(
            Connections::sweep_every(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_waiting_connection_is_woken_when_asked_and_told_once() {
        struct Woken(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let connections = table(2);
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        let woken = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
        let waker = std::task::Waker::from(Arc::clone(&woken));
        let mut context = Context::from_waker(&waker);
        let mut asked = std::pin::pin!(first.slot.asked());
        assert!(asked.as_mut().poll(&mut context).is_pending());
        connections.close_all();
        connections.close_all();
        assert!(woken.0.load(Ordering::SeqCst), "the waiting task is woken");
        assert_eq!(
            asked.poll(&mut context),
            Poll::Ready(Asked(Asked::CLOSE)),
            "asked twice, told once"
        );
        assert_eq!(asked_now(&first.slot), None);
        assert!(asked_now(&second.slot).is_some_and(Asked::to_close));
    }

    #[tokio::test]
    async fn a_response_keeps_its_connection_busy_until_its_body_is_dropped() {
        let connections = table(1);
        let place = connections.admit().unwrap();
        let response = WhileBusy::new(
            std::future::ready(Ok::<_, ()>(hyper::Response::new(String::from("body")))),
            Busy::enter(&place.slot),
        )
        .await
        .unwrap();
        assert!(
            connections.admit().is_none(),
            "the response is not sent yet"
        );
        drop(response);
        assert!(connections.admit().is_some());
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_oldest_idle_connection_and_refuses_when_all_are_busy() {
        let connections = table(2);
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        let _busy = Busy::enter(&second.slot);
        // Full: the first (idle) is asked to close and loses its place.
        let third = connections.admit().unwrap();
        let asked = tokio::time::timeout(std::time::Duration::from_secs(1), first.slot.asked())
            .await
            .expect("the idle connection is asked to close");
        assert!(asked.to_close() && !asked.to_expire());
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
