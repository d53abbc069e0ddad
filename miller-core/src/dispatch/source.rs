//! Where events come from: the `EventSource` trait, and an in-memory source.

use std::future::Future;

use bytes::Bytes;

use crate::Error;

/// One event: a name (the topic it was published on), the application it
/// belongs to, and its data as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event name, e.g. `activity.INVITE`.
    pub name: String,
    /// The application, e.g. `zhihu`.
    pub app: String,
    /// The data, byte for byte as published.
    pub data: Bytes,
}

impl Event {
    /// An event.
    pub fn new(name: impl Into<String>, app: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            app: app.into(),
            data: data.into(),
        }
    }
}

/// A source of events for the master. Each event comes with an opaque
/// token; the master calls [`EventSource::ack`] with it, in the order the
/// events came, once the queue has confirmed every job of that event. A
/// source that redelivers what was not acknowledged (a sink session) gives
/// at-least-once delivery; one that cannot (a kids subscription) says so.
pub trait EventSource: Send {
    /// What acknowledges one event.
    type Token: Send;

    /// The next events: waits for at least one, returns at most `max`
    /// (what is already at hand, without waiting for more). An empty batch
    /// means the source has ended.
    ///
    /// Must be cancel-safe: the master drops this future at shutdown.
    ///
    /// # Errors
    /// The source failed in a way it could not recover from itself.
    fn next_batch(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<(Event, Self::Token)>, Error>> + Send;

    /// Acknowledges the event `token` came with (and, for a cumulative
    /// source, every event before it).
    ///
    /// # Errors
    /// The acknowledgement could not be sent; the event may come again.
    fn ack(&mut self, token: Self::Token) -> impl Future<Output = Result<(), Error>> + Send;
}

/// An in-memory source: a list of events, handed out in batches, ended
/// when it is empty; it counts the acknowledgements (tests, benches).
#[derive(Debug, Clone, Default)]
pub struct VecSource {
    events: std::collections::VecDeque<Event>,
    next: u64,
    acked: Vec<u64>,
}

impl VecSource {
    /// A source of `events`, in order.
    pub fn new(events: impl IntoIterator<Item = Event>) -> Self {
        Self {
            events: events.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The indexes of the events acknowledged, in order.
    pub fn acked(&self) -> &[u64] {
        &self.acked
    }

    /// Events not handed out yet.
    pub fn remaining(&self) -> usize {
        self.events.len()
    }
}

impl EventSource for VecSource {
    type Token = u64;

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(Event, u64)>, Error> {
        let n = max.max(1).min(self.events.len());
        Ok(self
            .events
            .drain(..n)
            .map(|e| {
                self.next += 1;
                (e, self.next - 1)
            })
            .collect())
    }

    async fn ack(&mut self, token: u64) -> Result<(), Error> {
        self.acked.push(token);
        Ok(())
    }
}
