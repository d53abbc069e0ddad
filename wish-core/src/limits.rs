//! What one connection may hold and how long it may stall: the read timeout, the idle timeout and the server-wide budget of bytes in partial frames, without IO (time is an argument).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::error::LimitError;
use crate::server::Server;

/// The reading limits of one connection, as a transport applies them.
///
/// A transport reads into its buffer, decodes every whole frame it can, and
/// then tells [`handle_read`](ReadLimits::handle_read) how many bytes are
/// left: the start of a frame not yet whole (a *partial frame*). Those bytes
/// are charged to the server's budget ([`ServerConfig::max_partial_bytes`](crate::ServerConfig::max_partial_bytes))
/// until the frame is whole or the connection ends. The transport sleeps
/// until [`deadline`](ReadLimits::deadline), and then calls
/// [`handle_timeout`](ReadLimits::handle_timeout). An error from either is
/// the reason to close the connection; it is counted in [`ServerStats`](crate::ServerStats).
///
/// ```text
///  bytes read ─▶ buffer ─▶ FrameCodec ─▶ whole frames ─▶ Server::handle
///                  │ left over (a partial frame)
///                  ▼
///   handle_read(left, completed, now) ── over budget? ─▶ Err(OverBudget)
///   handle_decoded(left, now)   (frames decoded later, without a read)
///   deadline(busy) ─▶ sleep ─▶ handle_timeout(now, busy) ─▶ Err(ReadTimeout | Idle)
/// ```
///
/// The policy, chosen so that nothing waits on anything (no deadlock) and
/// a client with small requests is served whatever others do:
/// - a read that takes the server's partial bytes over the budget closes the
///   connection that made it, unless its partial frame is at most
///   [`ServerConfig::partial_allowance`](crate::ServerConfig::partial_allowance)
///   bytes; a frame that arrives whole in one read is never charged at all;
/// - a partial frame must be whole within
///   [`ServerConfig::read_timeout`](crate::ServerConfig::read_timeout) of its
///   first byte, however slowly it keeps coming; time the transport spends
///   not reading, at its bound of calls in flight, does not count;
/// - with [`ServerConfig::idle_timeout`](crate::ServerConfig::idle_timeout), a
///   connection with no partial frame and no call in flight is closed after
///   that long without a byte read or an answer written.
///
/// Dropping it gives back what it holds of the budget.
#[derive(Debug)]
pub struct ReadLimits {
    server: Server,
    /// Bytes of this connection charged to the server's budget.
    held: usize,
    /// When the first byte of the partial frame was read.
    frame_started: Option<Instant>,
    /// The last read or answer, for the idle timeout.
    active: Instant,
    /// Since when the transport has not been reading, at its bound of calls
    /// in flight: that time does not count against a partial frame.
    paused: Option<Instant>,
}

impl ReadLimits {
    /// The limits of a connection of `server`, accepted at `now`.
    pub fn new(server: &Server, now: Instant) -> ReadLimits {
        ReadLimits {
            server: server.clone(),
            held: 0,
            frame_started: None,
            active: now,
            paused: None,
        }
    }

    /// After a read at `now`, and the decoding of the whole frames in the
    /// buffer: `buffered` bytes are left, and `completed` says whether a
    /// frame was whole in this read (so that what is left is a new frame's start).
    ///
    /// # Errors
    /// [`LimitError::OverBudget`]: close the connection.
    pub fn handle_read(
        &mut self,
        buffered: usize,
        completed: bool,
        now: Instant,
    ) -> Result<(), LimitError> {
        self.active = now;
        self.frame_started = match self.frame_started {
            _ if buffered == 0 => None,
            Some(started) if !completed => Some(started),
            _ => Some(now),
        };
        let config = self.server.config();
        let (max, allowance) = (config.max_partial_bytes, config.partial_allowance);
        let stats = self.server.stats();
        let grew = buffered > self.held;
        let total = stats.charge_partial(self.held, buffered);
        self.held = buffered;
        if grew && total > max as u64 && buffered > allowance {
            stats.closed_over_budget.fetch_add(1, Ordering::Relaxed);
            self.release();
            return Err(LimitError::OverBudget { max });
        }
        Ok(())
    }

    /// After decoding, without a read, whole frames that were already in the
    /// buffer (the transport had stopped at its bound of calls in flight):
    /// `buffered` bytes are left. No byte is fresh, so the clock of the
    /// partial frame is not restarted: its first byte came with an earlier read.
    pub fn handle_decoded(&mut self, buffered: usize, now: Instant) {
        self.frame_started = match self.frame_started {
            _ if buffered == 0 => None,
            started => started.or(Some(now)),
        };
        // Without a read the buffer only shrinks: nothing to refuse.
        self.server.stats().charge_partial(self.held, buffered);
        self.held = buffered;
    }

    /// The transport stopped reading at `now` (`paused`), at its bound of
    /// calls in flight, or started again. While it does not read, the client
    /// cannot finish its frame: that time is not counted against the read
    /// timeout, and there is no [`deadline`](ReadLimits::deadline).
    pub fn handle_paused(&mut self, paused: bool, now: Instant) {
        match (self.paused, paused) {
            (None, true) => self.paused = Some(now),
            (Some(since), false) => {
                self.paused = None;
                let stopped = now.saturating_duration_since(since);
                self.frame_started = self.frame_started.map(|started| started + stopped);
            }
            _ => {}
        }
    }

    /// An answer was written at `now`: the connection is not idle.
    pub fn handle_answer(&mut self, now: Instant) {
        self.active = now;
    }

    /// When [`handle_timeout`](ReadLimits::handle_timeout) is next due, if
    /// ever; `busy` says whether calls are in flight (then the connection is
    /// not idle).
    pub fn deadline(&self, busy: bool) -> Option<Instant> {
        if self.paused.is_some() {
            return None;
        }
        let config = self.server.config();
        match self.frame_started {
            Some(started) => config.read_timeout.map(|t| started + t),
            None if busy => None,
            None => config.idle_timeout.map(|t| self.active + t),
        }
    }

    /// The deadline has come, or so the transport's timer says.
    ///
    /// # Errors
    /// [`LimitError::ReadTimeout`] or [`LimitError::Idle`]: close the connection.
    pub fn handle_timeout(&mut self, now: Instant, busy: bool) -> Result<(), LimitError> {
        let Some(due) = self.deadline(busy) else {
            return Ok(());
        };
        if now < due {
            return Ok(());
        }
        let config = self.server.config();
        let stats = self.server.stats();
        let err = match (self.frame_started, config.read_timeout, config.idle_timeout) {
            (Some(_), Some(t), _) => {
                stats.closed_read_timeout.fetch_add(1, Ordering::Relaxed);
                LimitError::ReadTimeout(t)
            }
            (_, _, t) => {
                stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                LimitError::Idle(t.unwrap_or_default())
            }
        };
        self.release();
        Err(err)
    }

    fn release(&mut self) {
        self.server.stats().charge_partial(self.held, 0);
        self.held = 0;
    }
}

impl Drop for ReadLimits {
    fn drop(&mut self) {
        self.release();
    }
}
