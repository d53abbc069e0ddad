//! The server toolkit: one connection policy for every RESP or line-protocol server.
//!
//! A server (kids' [`Session`](crate::Session) over a
//! [`RequestDecoder`](crate::RequestDecoder), or a line protocol of your
//! own) is a per-connection [`Protocol`] state machine and a bounded [`RequestCodec`];
//! [`Connection`] holds everything between them and a byte stream, with no
//! IO of its own:
//!
//! ```text
//!  Transport::poll_read ─▶ read buffer (batch ≤ read_batch) ─▶ RequestCodec::decode
//!                                                                  │ requests
//!                                                                  ▼
//!                          Protocol::handle(req, now) ─▶ Flow (Continue | Close | Wait)
//!                                                                  │ replies, and pushes from
//!                                                                  ▼ other connections
//!  Transport::poll_write ◀─ write buffer ◀─ Outbox::poll_drain ◀─ Outbox (nlimit-bounded)
//! ```
//!
//! The policy it applies, whatever the protocol:
//! - reads are batched: what the stream holds, up to
//!   [`ConnConfig::read_batch`] bytes, is decoded and handled before the
//!   replies are flushed, so a pipelining client's requests share work (one
//!   store commit per batch in kids); after a whole batch the connection
//!   lets the others run before it reads more ([`Step::Yield`]), so a client
//!   that never stops sending cannot keep the others waiting, and a protocol
//!   may cut one request's work into slices the same way
//!   ([`Protocol::must_yield`]);
//! - reading pauses while the connection's own unsent output is over
//!   [`ConnConfig::max_pending_output`] (unless the protocol bounds that
//!   output itself, as kids does for subscribers with `nlimit`), while the
//!   protocol holds replies until something is stored ([`Flow::Wait`],
//!   [`Protocol::poll_release`]), while the protocol has no room
//!   ([`Protocol::poll_room`]), and while the whole server is over its
//!   [`Budget`] of buffered bytes;
//! - output pushed by other connections (pub/sub messages) is written once
//!   per pass of the event loop, not once per push: the connection asks its
//!   driver to yield first ([`Step::Yield`]), as Redis writes each client's
//!   output once before it sleeps;
//! - idle buffers are freed; a connection idle longer than
//!   [`ConnConfig::idle_timeout`], or holding part of a request for longer
//!   than [`ConnConfig::request_timeout`], is closed;
//! - on drain ([`Connection::stop_reading`]) it reads nothing more and
//!   finishes once everything it owes is written.
//!
//! Time is an argument (`now`), the stream is a [`Transport`], so a test can
//! run a connection against an in-memory stream ([`MemoryStream`]) on a
//! simulated clock. The
//! tokio adapter (`net`, feature `tokio`) adds only sockets: accepting,
//! timers, tasks.

mod budget;
mod conn;
mod memory;
pub(crate) mod outbox;

pub use budget::Budget;
pub use conn::{ConnConfig, Connection, Ended, Flow, Protocol, RequestCodec, Step, Transport};
pub use memory::MemoryStream;
pub use outbox::{CloseReason, Outbox};
