//! The client side: channels, typed calls, the multiplexer of calls in flight, and the in-process channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio_util::codec::{Decoder, Encoder};

use crate::cache::{CacheLayer, Probe};
use crate::error::{Error, Status};
use crate::frame::{Body, Frame, FrameCodec, RequestFrame};
use crate::options::MethodDesc;
use crate::server::Server;

/// Per-call overrides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// Fail the call with [`Code::DEADLINE_EXCEEDED`](crate::Code::DEADLINE_EXCEEDED) if no answer came in
    /// this long after the request was queued for the socket (connecting is
    /// bounded by the client's own connect timeout); the server is told, and
    /// stops the handler when it passes. [`LocalChannel`] ignores it.
    pub deadline: Option<Duration>,
    /// Do not answer from a cache (client's or server's), nor fill it.
    pub no_cache: bool,
    /// Do not compress the request, and ask for an uncompressed response.
    pub no_compress: bool,
}

impl CallOptions {
    /// No overrides.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// With a deadline.
    pub fn deadline(mut self, deadline: Duration) -> CallOptions {
        self.deadline = Some(deadline);
        self
    }

    /// Bypassing the caches.
    pub fn no_cache(mut self) -> CallOptions {
        self.no_cache = true;
        self
    }

    /// Without compression.
    pub fn no_compress(mut self) -> CallOptions {
        self.no_compress = true;
        self
    }
}

/// An answer, still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// The response message.
    pub payload: Bytes,
    /// It came from a cache.
    pub from_cache: bool,
    /// When it was computed, for methods with `(cache)`.
    pub computed_at: Option<SystemTime>,
}

/// A decoded answer, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The response message.
    pub value: T,
    /// It came from a cache.
    pub from_cache: bool,
    /// When it was computed, for methods with `(cache)`.
    pub computed_at: Option<SystemTime>,
}

/// Something that carries calls to a server: a connection
/// (`net::Client` with the `tokio` feature), an in-process server
/// ([`LocalChannel`]), or a layer over another channel ([`CachingChannel`]).
/// Generated clients are generic over it.
pub trait Channel: Send + Sync + 'static {
    /// Calls `method` with an encoded request.
    fn call(
        &self,
        method: &'static MethodDesc,
        request: Bytes,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<RawReply, Status>>;
}

impl<C: Channel + ?Sized> Channel for Arc<C> {
    fn call(
        &self,
        method: &'static MethodDesc,
        request: Bytes,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<RawReply, Status>> {
        (**self).call(method, request, options)
    }
}

/// Encodes `request`, calls, and decodes the answer: what generated clients call.
///
/// # Errors
/// The call's status; [`Code::INTERNAL`](crate::Code::INTERNAL) if the
/// answer does not decode, or lacks a field its type requires
/// ([`MethodDesc::response`]).
pub async fn call<C, Req, Resp>(
    channel: &C,
    method: &'static MethodDesc,
    request: &Req,
    options: CallOptions,
) -> Result<Reply<Resp>, Status>
where
    C: Channel + ?Sized,
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let raw = channel
        .call(method, Bytes::from(request.encode_to_vec()), options)
        .await?;
    method
        .response
        .check(&raw.payload)
        .map_err(|e| e.response_status())?;
    let value = Resp::decode(raw.payload)
        .map_err(|e| Status::internal(format!("response does not decode: {e}")))?;
    Ok(Reply {
        value,
        from_cache: raw.from_cache,
        computed_at: raw.computed_at,
    })
}

/// The request frame for a call.
pub fn request_frame(id: u64, method: &MethodDesc, payload: Bytes, options: CallOptions) -> Frame {
    Frame {
        id,
        body: Body::Request(RequestFrame {
            method: method.id,
            deadline: options.deadline,
            no_cache: options.no_cache,
            plain_response: options.no_compress,
            compress: method.options.compress && !options.no_compress,
            payload,
        }),
    }
}

/// The answer a response or error frame carries.
///
/// # Errors
/// The status of an error frame; [`Code::INTERNAL`](crate::Code::INTERNAL) for a request or cancel frame.
pub fn reply_from(frame: Frame) -> Result<RawReply, Status> {
    match frame.body {
        Body::Response(r) => Ok(RawReply {
            payload: r.payload,
            from_cache: r.from_cache,
            computed_at: r.computed_at.map(crate::frame::from_millis),
        }),
        Body::Error(status) => Err(status),
        Body::Request(_) | Body::Cancel => Err(Status::internal("server sent a client frame")),
    }
}

/// The calls in flight on one connection: ids, and who waits for each.
///
/// `W` is whatever the transport wakes when an answer comes (a oneshot
/// sender, say). Ids are never reused while a call is in flight; answers may
/// come in any order.
///
/// ```
/// use bytes::Bytes;
/// use wish_core::{Frame, Multiplexer};
///
/// let mut calls = Multiplexer::new(2);
/// let a = calls.insert("a").unwrap();
/// let b = calls.insert("b").unwrap();
/// assert!(calls.insert("c").is_none(), "bounded");
/// let (who, reply) = calls.complete(Frame::response(b, Bytes::new())).unwrap();
/// assert_eq!((who, reply.is_ok()), ("b", true));
/// assert_eq!(calls.remove(a), Some("a"));
/// ```
#[derive(Debug)]
pub struct Multiplexer<W> {
    waiting: HashMap<u64, W, foldhash::fast::RandomState>,
    next_id: u64,
    max: usize,
}

impl<W> Multiplexer<W> {
    /// At most `max` calls in flight.
    pub fn new(max: usize) -> Multiplexer<W> {
        Multiplexer {
            waiting: HashMap::default(),
            next_id: 1,
            max: max.max(1),
        }
    }

    /// A new call; its id, or `None` when `max` are in flight.
    pub fn insert(&mut self, waiter: W) -> Option<u64> {
        if self.waiting.len() >= self.max {
            return None;
        }
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if let std::collections::hash_map::Entry::Vacant(e) = self.waiting.entry(id) {
                e.insert(waiter);
                return Some(id);
            }
        }
    }

    /// The waiter of the call a response or error frame answers, and the
    /// answer; `None` for an id not in flight (a call already cancelled or timed out).
    pub fn complete(&mut self, frame: Frame) -> Option<(W, Result<RawReply, Status>)> {
        let waiter = self.waiting.remove(&frame.id)?;
        Some((waiter, reply_from(frame)))
    }

    /// Forgets a call (cancelled, timed out); its waiter if it was in flight.
    pub fn remove(&mut self, id: u64) -> Option<W> {
        self.waiting.remove(&id)
    }

    /// Every waiter, for when the connection is lost.
    pub fn drain(&mut self) -> impl Iterator<Item = W> + '_ {
        self.waiting.drain().map(|(_, w)| w)
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// The time source of a channel: `SystemTime::now` in production, a
/// simulated clock in tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A channel to a server in the same process, through the wire format: each
/// call's frames are encoded and decoded as over a socket, without one.
/// For tests and benchmarks, and for calling a service from its own process.
/// Deadlines are not applied: the call runs to its end.
///
/// The crate docs show one in use, on a simulated clock.
#[derive(Clone)]
pub struct LocalChannel {
    server: Server,
    clock: Clock,
    codec: FrameCodec,
    next_id: Arc<AtomicU64>,
}

impl LocalChannel {
    /// A channel to `server`, reading time from `clock`.
    pub fn new(server: Server, clock: Clock) -> LocalChannel {
        LocalChannel {
            server,
            clock,
            codec: FrameCodec::new(),
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// With this codec (bounds, compression threshold) on both sides.
    pub fn codec(mut self, codec: FrameCodec) -> LocalChannel {
        self.codec = codec;
        self
    }
}

impl Channel for LocalChannel {
    fn call(
        &self,
        method: &'static MethodDesc,
        request: Bytes,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<RawReply, Status>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (server, clock, mut codec) =
            (self.server.clone(), self.clock.clone(), self.codec.clone());
        Box::pin(async move {
            let mut wire = BytesMut::new();
            let frame = request_frame(id, method, request, options);
            let frame = roundtrip(&mut codec, frame, &mut wire)?;
            let Body::Request(req) = frame.body else {
                return Err(Status::internal("request frame decoded as another kind"));
            };
            let answer = server.handle(frame.id, req, clock()).await;
            reply_from(roundtrip(&mut codec, answer, &mut wire)?)
        })
    }
}

fn roundtrip(codec: &mut FrameCodec, frame: Frame, wire: &mut BytesMut) -> Result<Frame, Status> {
    codec.encode(frame, wire).map_err(|e| match &e {
        Error::Frame(f) => Status::new(f.code(), e.to_string()),
        _ => Status::internal(e.to_string()),
    })?;
    codec
        .decode(wire)
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| Status::internal("frame did not decode whole"))
}

/// The cache options applied on the client side, over another channel: a
/// fresh cached answer is returned without a call.
///
/// Off by default, since it is only as fresh as its timestamp store: give it
/// the store the servers' handlers touch (one backed by redis, say) for
/// `timestamped` methods.
pub struct CachingChannel<C> {
    shared: Arc<Caching<C>>,
}

/// What every call of a [`CachingChannel`] uses: one `Arc` to clone per call.
struct Caching<C> {
    inner: C,
    layer: CacheLayer,
    clock: Clock,
}

impl<C: Channel> CachingChannel<C> {
    /// Caches the answers of `inner`'s `(cache)` methods in `layer`.
    pub fn new(inner: C, layer: CacheLayer, clock: Clock) -> CachingChannel<C> {
        CachingChannel {
            shared: Arc::new(Caching {
                inner,
                layer,
                clock,
            }),
        }
    }
}

impl<C> Clone for CachingChannel<C> {
    fn clone(&self) -> Self {
        CachingChannel {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Channel> Channel for CachingChannel<C> {
    fn call(
        &self,
        method: &'static MethodDesc,
        request: Bytes,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<RawReply, Status>> {
        let (shared, now) = (self.shared.clone(), (self.shared.clock)());
        Box::pin(async move {
            let probe = if options.no_cache {
                Probe::Call(None, request)
            } else {
                shared.layer.probe(method, request, now).await
            };
            let (pending, request) = match probe {
                Probe::Hit(hit) => {
                    return Ok(RawReply {
                        payload: hit.payload,
                        from_cache: true,
                        computed_at: Some(hit.computed_at),
                    });
                }
                Probe::Call(pending, request) => (pending, request),
            };
            let reply = shared.inner.call(method, request, options).await?;
            if let Some(pending) = pending {
                shared
                    .layer
                    .store(pending, reply.payload.clone(), reply.computed_at)
                    .await;
            }
            Ok(reply)
        })
    }
}
