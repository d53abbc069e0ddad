//! Forwarding to another kids: pipelined `LOG` (or another command,
//! [`ForwarderConfig::command`]) in a bounded window, acknowledged by integer
//! replies, re-sent in order after any failure. No IO: the caller moves the
//! bytes (`net::drive_link` on a socket).
//!
//! ```text
//!  offer(topic, msg) ─▶ queue: [ in flight (sent, unacked) | unsent ]  (bounded)
//!  poll_transmit ──▶ "*3 $3 LOG topic msg" for unsent, while in flight < window
//!  handle_input ◀── ":n" acks the oldest in flight; "-ERR ..." = failure
//!  failure / disconnect / reply timeout ─▶ Disconnect: every unacked message
//!     becomes unsent again, in order; reconnect after capped exponential backoff
//! ```
//! A message leaves the queue only when its integer reply arrived, so nothing
//! accepted is lost; a message may be delivered twice only when a failure hit
//! it in flight, and every such re-send is counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::{Frame, FrameCodec, Proto, ReplyWriter};

/// Settings of a [`Forwarder`].
///
/// ```
/// use std::time::Duration;
/// use kids_core::ForwarderConfig;
/// let config = ForwarderConfig::default().window(512).backoff(Duration::from_millis(50), Duration::from_secs(5));
/// assert_eq!(config.window_size(), 512);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderConfig {
    window: usize,
    max_queue: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    timeout: Duration,
    command: Bytes,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            window: 1024,
            max_queue: 65_536,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            command: Bytes::from_static(b"LOG"),
        }
    }
}

impl ForwarderConfig {
    /// Messages sent but not yet acknowledged, at most.
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }
    /// Messages accepted but not yet acknowledged, at most ([`Forwarder::offer`] refuses beyond).
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n.max(1);
        self
    }
    /// Reconnect delay: starts at `min`, doubles per failure, capped at `max`, reset by an ack.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }
    /// How long in-flight messages may wait for a reply before the connection is given up.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// The command sent per message, `LOG` by default; `PUBLISH` forwards
    /// to a plain Redis server (it too answers with an integer).
    pub fn command(mut self, name: impl Into<Bytes>) -> Self {
        self.command = name.into();
        self
    }
    /// The window size.
    pub fn window_size(&self) -> usize {
        self.window
    }
}

/// What the connection driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardAction {
    /// Keep going.
    Continue,
    /// Close the connection, then call [`Forwarder::on_disconnect`].
    Disconnect(String),
}

/// Counters of a [`Forwarder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardStats {
    /// Messages accepted by [`Forwarder::offer`].
    pub accepted: u64,
    /// Messages acknowledged by the peer.
    pub acked: u64,
    /// `LOG` commands written (first sends and re-sends).
    pub sent: u64,
    /// Re-sends of messages that were in flight when a failure hit: the
    /// upper bound of duplicates the peer may have stored.
    pub resent: u64,
    /// Connections given up (disconnects, error replies, timeouts).
    pub failures: u64,
}

#[derive(Debug)]
struct Pending {
    topic: Bytes,
    message: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `None`: may connect at once.
    Disconnected {
        retry_at: Option<Instant>,
    },
    Connected {
        waiting_since: Option<Instant>,
    },
}

/// The IO-free state of one forwarding connection.
///
/// ```
/// use std::time::Instant;
/// use bytes::BytesMut;
/// use kids_core::{ForwardAction, Forwarder, ForwarderConfig};
///
/// let now = Instant::now();
/// let mut fwd = Forwarder::new(ForwarderConfig::default());
/// fwd.offer("web".into(), "GET /".into()).unwrap();
/// assert!(fwd.should_connect(now));
/// fwd.on_connected();
/// let mut out = BytesMut::new();
/// fwd.poll_transmit(&mut out, now);
/// assert_eq!(&out[..], b"*3\r\n$3\r\nLOG\r\n$3\r\nweb\r\n$5\r\nGET /\r\n");
/// let mut replies = BytesMut::from(&b":1\r\n"[..]);
/// assert_eq!(fwd.handle_input(&mut replies, now), ForwardAction::Continue);
/// assert_eq!(fwd.stats().acked, 1);
/// assert!(fwd.is_empty());
/// ```
#[derive(Debug)]
pub struct Forwarder {
    config: ForwarderConfig,
    queue: VecDeque<Pending>,
    inflight: usize,
    state: State,
    backoff: Duration,
    codec: FrameCodec,
    stats: ForwardStats,
}

/// The queue is full: the message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("forwarding queue full")]
pub struct QueueFullError;

impl Forwarder {
    /// A forwarder that may connect at once.
    pub fn new(config: ForwarderConfig) -> Self {
        let backoff = config.backoff_min;
        Self {
            config,
            queue: VecDeque::new(),
            inflight: 0,
            state: State::Disconnected { retry_at: None },
            backoff,
            codec: FrameCodec::default(),
            stats: ForwardStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ForwardStats {
        self.stats
    }

    /// Messages accepted and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when every accepted message was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when [`Forwarder::offer`] would refuse.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.config.max_queue
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// Accepts a message for forwarding.
    ///
    /// # Errors
    /// [`QueueFullError`] when the queue holds `max_queue` messages.
    pub fn offer(&mut self, topic: Bytes, message: Bytes) -> Result<(), QueueFullError> {
        if self.is_full() {
            return Err(QueueFullError);
        }
        self.queue.push_back(Pending { topic, message });
        self.stats.accepted += 1;
        Ok(())
    }

    /// True when connected with unsent messages and room in the window:
    /// [`Forwarder::poll_transmit`] would add something.
    pub fn wants_transmit(&self) -> bool {
        self.is_connected()
            && self.inflight < self.config.window
            && self.inflight < self.queue.len()
    }

    /// Whether the driver should try to connect now.
    pub fn should_connect(&self, now: Instant) -> bool {
        matches!(self.state, State::Disconnected { retry_at } if retry_at.is_none_or(|t| now >= t))
    }

    /// While disconnected and backing off: when the next attempt may start.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.state {
            State::Disconnected { retry_at } => retry_at,
            State::Connected { .. } => None,
        }
    }

    /// The connection is up: everything unacknowledged will be sent, in order.
    pub fn on_connected(&mut self) {
        self.state = State::Connected {
            waiting_since: None,
        };
        self.inflight = 0;
        self.codec = FrameCodec::default();
    }

    /// The connection is gone (or a connect attempt failed): unacknowledged
    /// messages become unsent again, and the next attempt waits the backoff.
    pub fn on_disconnect(&mut self, now: Instant) {
        self.stats.failures += 1;
        // Every message in flight was sent at least once.
        self.stats.resent += self.inflight as u64;
        self.inflight = 0;
        self.state = State::Disconnected {
            retry_at: Some(now + self.backoff),
        };
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
    }

    /// Encodes `LOG` commands for unsent messages while the window allows;
    /// returns how many were added to `out`.
    pub fn poll_transmit(&mut self, out: &mut BytesMut, now: Instant) -> usize {
        let State::Connected { waiting_since } = &mut self.state else {
            return 0;
        };
        let mut n = 0;
        while self.inflight < self.config.window && self.inflight < self.queue.len() {
            let p = &mut self.queue[self.inflight];
            let mut w = ReplyWriter::new(out, Proto::Resp2);
            w.array(3);
            w.bulk(&self.config.command);
            w.bulk(&p.topic);
            w.bulk(&p.message);
            self.inflight += 1;
            n += 1;
        }
        if n > 0 && waiting_since.is_none() {
            *waiting_since = Some(now);
        }
        self.stats.sent += n as u64;
        n
    }

    /// Consumes replies from `input`: each integer reply acknowledges the
    /// oldest message in flight.
    pub fn handle_input(&mut self, input: &mut BytesMut, now: Instant) -> ForwardAction {
        loop {
            let frame = match self.codec.decode(input) {
                Ok(Some(f)) => f,
                Ok(None) => return ForwardAction::Continue,
                Err(e) => return ForwardAction::Disconnect(format!("bad reply: {e}")),
            };
            match frame {
                Frame::Integer(_) if self.inflight > 0 => {
                    self.queue.pop_front();
                    self.inflight -= 1;
                    self.stats.acked += 1;
                    self.backoff = self.config.backoff_min;
                    if let State::Connected { waiting_since } = &mut self.state {
                        *waiting_since = (self.inflight > 0).then_some(now);
                    }
                }
                Frame::Integer(_) => {
                    return ForwardAction::Disconnect("reply without a request".into());
                }
                Frame::Error(e) => {
                    return ForwardAction::Disconnect(format!(
                        "peer refused: {}",
                        String::from_utf8_lossy(&e)
                    ));
                }
                other => return ForwardAction::Disconnect(format!("unexpected reply {other:?}")),
            }
        }
    }

    /// When [`Forwarder::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Disconnected { retry_at } => retry_at.filter(|_| !self.queue.is_empty()),
            State::Connected { waiting_since } => waiting_since.map(|t| t + self.config.timeout),
        }
    }

    /// Gives the connection up when in-flight messages waited longer than the timeout.
    pub fn handle_timeout(&mut self, now: Instant) -> ForwardAction {
        match self.state {
            State::Connected {
                waiting_since: Some(t),
            } if now >= t + self.config.timeout => {
                ForwardAction::Disconnect(format!("no reply for {:?}", self.config.timeout))
            }
            _ => ForwardAction::Continue,
        }
    }
}
