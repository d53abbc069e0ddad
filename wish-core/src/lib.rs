//! # wish-core: RPC from a .proto file, with per-method cache, expire, compress and timestamped options
//!
//! What: an RPC framework. One `.proto` file describes a service; a build
//! step turns it into a `<Service>Handler` trait to implement, a server
//! dispatcher, a typed client and a method table. Method options declared in
//! the `.proto` switch caching, expiry, compression and timestamp validation
//! on without a line of handler code:
//!
//! ```proto
//! service Advanced {
//!   rpc Multiply (CalcRequest) returns (CalcResponse) {
//!     option (cache) = true;            // responses may be cached
//!     option (expire) = 3600;           // cache entry lifetime, seconds
//!     option (compress) = true;         // payloads compressed on the wire
//!     option (timestamped) = true;      // served from cache only if newer than a and b
//!     option (timestamped_fields) = "a:b";
//!   }
//! }
//! ```
//!
//! Why: the options are properties of the method, not of each handler, so
//! they belong in the interface file. Neither tonic, tarpc nor thrift has them.
//!
//! How: this crate does no IO. A [`Server`] turns request frames into answer
//! frames; [`FrameCodec`] turns frames into bytes and back, with a bound on
//! every length; time is an argument. The `tokio` feature (module `net`)
//! carries frames over TCP and unix sockets; the `build` feature (module
//! `build`) generates code from `.proto` files with protox, without `protoc`:
//! Rust for a `build.rs`, and, with `build::PythonPackage`, an installable
//! Python package (messages, blocking and asyncio clients, asyncio server
//! bases, the same options; PROTOCOL.md section 14 compares the two sides).
//!
//! ```text
//!  client                                               server
//!  XClient::multiply(req)                               Server::handle(id, req, now)
//!   └─ Channel::call ── CacheLayer (optional) ─┐          ├─ method table: id -> options
//!      request frame: id, method id, deadline, │          ├─ CacheLayer::lookup (cache, expire, timestamped)
//!      lz4 if (compress) ─▶ FrameCodec ═══ bytes ═══▶ FrameCodec ─▶ hit? answer from cache
//!                                                      │        : XHandler::multiply(ctx, req), store answer
//!  Reply { value, from_cache } ◀── FrameCodec ◀══ bytes ══ FrameCodec ◀── response frame (lz4 if (compress))
//! ```
//!
//! ## The options
//! - `(cache)`: answers are kept in a [`CacheStore`] ([`LruCache`] in
//!   memory, or your own over memcached or redis), keyed by the method id and
//!   the request's canonical bytes: its top-level fields in field-number
//!   order. Encoders that write fields in that order (prost, protoc's C++,
//!   Java and Python) already produce it. Two encodings of one message that
//!   differ otherwise (packed or not, non-minimal varints) are two keys: a
//!   miss, never a wrong answer. A request that sends two members of one
//!   `oneof` (the last one wins) is not cached. Errors are never cached.
//! - `(expire) = N`: an entry is served for N seconds after its call started.
//! - `(compress)`: payloads at or above the codec's threshold (512 bytes by
//!   default) are compressed with lz4, and sent compressed only if smaller. A
//!   compressed frame declares its decompressed size, which is checked
//!   against the frame bound before anything is allocated.
//! - `(timestamped)` with `(timestamped_fields) = "a:b"`: the request's
//!   fields `a` and `b` name entities, `a=<value of a>` and `b=<value of b>`
//!   (`Multiply(a=1, b=2)` names `a=1` and `b=2`). Whatever changes an entity
//!   records it with [`TimestampStore::touch`] (from a handler,
//!   [`CallContext::touch`]). A cached answer is served only if its call
//!   started after the last touch of every entity its request names: after
//!   `touch("a=1")`, `Multiply(1, 2)` is computed again while `Multiply(3, 4)`
//!   still comes from the cache. An entity named by a field the request
//!   leaves out has the field's default value.
//!
//! Per call, [`CallOptions`] can bypass the caches or compression; per
//! server, [`ServerConfig`] can switch caching and compression off.
//!
//! ## proto2 `required` fields
//! prost decodes a missing required scalar as its default, so a `Multiply`
//! without `b` would be `a * 0`. The code generator therefore writes each
//! method's [`RequiredFields`] (its request's and response's, with the
//! messages nested in them) into its [`MethodDesc`], and the encoded bytes are
//! checked: a [`Server`] answers a request that lacks one with
//! [`Code::INVALID_ARGUMENT`] naming it, before its cache and its handler; a
//! call ([`call`], which generated clients use) whose answer lacks one fails
//! with [`Code::INTERNAL`]. Protobuf's merge rules apply (a singular message
//! sent twice is merged, the last member of a `oneof` wins), and a group is
//! accepted only where one is declared. PROTOCOL.md, section 9.1, has the rules.
//!
//! ## Limits
//! Every length on the wire has a bound ([`FrameCodec::max_frame_len`]), and
//! the codec allocates for what arrives, not for what a length field
//! announces. A served connection also has a read timeout counted from a
//! frame's first byte, an optional idle timeout, and a share of a
//! server-wide budget of bytes in partial frames ([`ReadLimits`], set in
//! [`ServerConfig`]); [`ServerStats`] counts the connections closed for each.
//!
//! ## Example
//! A hand-written service (generated code implements [`Service`] the same
//! way), called through the wire format in memory, on a simulated clock:
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
//! use std::time::{Duration, SystemTime};
//! use wish_core::{
//!     BoxFuture, Bytes, CallContext, CallOptions, Channel, LocalChannel, MethodDesc,
//!     MethodOptions, Server, ServerConfig, Service, ServiceDesc, Status,
//! };
//!
//! static ECHO: ServiceDesc = ServiceDesc::new(
//!     "demo.Echo",
//!     &[MethodDesc::new("demo.Echo.Say", MethodOptions::new().cache(60))],
//! );
//!
//! struct Echo(Arc<AtomicU64>);
//! impl Service for Echo {
//!     fn descriptor(&self) -> &'static ServiceDesc { &ECHO }
//!     fn call(&self, _method: usize, _ctx: CallContext, request: Bytes)
//!         -> BoxFuture<'static, Result<Bytes, Status>> {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Box::pin(async move { Ok(request) })
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let calls = Arc::new(AtomicU64::new(0));
//! let server = Server::new(ServerConfig::default()).with_service(Echo(calls.clone())).unwrap();
//! let clock = Arc::new(AtomicU64::new(1_000));
//! let now = { let c = clock.clone(); move || SystemTime::UNIX_EPOCH + Duration::from_secs(c.load(Ordering::Relaxed)) };
//! let channel = LocalChannel::new(server, Arc::new(now));
//! let say = &ECHO.methods[0];
//!
//! let first = channel.call(say, Bytes::from_static(b"\x08\x01"), CallOptions::new()).await.unwrap();
//! let second = channel.call(say, Bytes::from_static(b"\x08\x01"), CallOptions::new()).await.unwrap();
//! assert_eq!((first.from_cache, second.from_cache), (false, true));
//! clock.fetch_add(60, Ordering::Relaxed); // (expire) = 60 has passed
//! let third = channel.call(say, Bytes::from_static(b"\x08\x01"), CallOptions::new()).await.unwrap();
//! assert!(!third.from_cache);
//! assert_eq!(calls.load(Ordering::Relaxed), 2);
//! # });
//! ```

mod cache;
mod client;
mod error;
mod frame;
mod limits;
mod options;
#[cfg(feature = "build")]
mod python;
mod required;
mod server;
mod wire;

#[cfg(feature = "build")]
#[path = "codegen.rs"]
pub mod build;
#[cfg(feature = "tokio")]
pub mod net;

/// Locks a mutex, taking it over from a thread that panicked while holding
/// it: every state behind these locks stays consistent between statements.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub use bytes::Bytes;
pub use futures::future::BoxFuture;

pub use cache::{
    CacheKey, CacheLayer, CacheStore, CachedResponse, Lookup, LruCache, MemoryTimestamps, Pending,
    StoreFuture, TimestampStore,
};
pub use client::{
    CachingChannel, CallOptions, Channel, Clock, LocalChannel, Multiplexer, RawReply, Reply, call,
    reply_from, request_frame,
};
pub use error::{Code, Error, FrameError, LimitError, RequiredError, Status};
pub use frame::{
    Body, DEFAULT_COMPRESS_THRESHOLD, DEFAULT_MAX_FRAME_LEN, Frame, FrameCodec, MAX_ERROR_MESSAGE,
    RequestFrame, ResponseFrame, VERSION, method_id,
};
pub use limits::ReadLimits;
pub use options::{
    EntityField, FieldKind, MethodDesc, MethodOptions, OptionError, OptionProblem, ServiceDesc,
};
pub use required::{MAX_REQUIRED_DEPTH, NestedField, RequiredField, RequiredFields};
pub use server::{
    CallContext, LONG_POLL_WEIGHT, LONG_POLLS, Server, ServerConfig, ServerStats, Service,
};
