//! The options on a simulated clock, through the wire format in memory: cache, expire, timestamped, compress, overrides.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio_util::codec::Encoder;
use wish_core::{
    Body, CacheLayer, CachingChannel, CallOptions, Channel, Code, Error, FrameCodec, LocalChannel,
    LruCache, MemoryTimestamps, MethodDesc, MethodOptions, RequestFrame, Server, ServerConfig,
    ServiceDesc,
};

use super::support::*;

fn setup(config: ServerConfig) -> (Arc<Arith>, Server, LocalChannel, SimClock) {
    let arith = Arc::new(Arith::default());
    let server = Server::new(config)
        .with_service(Svc(arith.clone()))
        .unwrap();
    let clock = SimClock::at(1_000_000);
    let channel = LocalChannel::new(server.clone(), clock.clock());
    (arith, server, channel, clock)
}

/// A client with its own cache in front of a server whose cache is off:
/// every from-cache answer is the client's.
fn client_cache() -> (
    Arc<Arith>,
    CachingChannel<LocalChannel>,
    CacheLayer,
    SimClock,
) {
    let mut config = ServerConfig::default();
    config.cache = false;
    let (arith, _server, channel, clock) = setup(config);
    let layer = CacheLayer::new(
        Arc::new(LruCache::new(100, 1 << 20)),
        Arc::new(MemoryTimestamps::new(100)),
    );
    let cached = CachingChannel::new(channel, layer.clone(), clock.clock());
    (arith, cached, layer, clock)
}

async fn mul(channel: &impl Channel, a: i32, b: i32) -> (i64, bool) {
    let reply = channel
        .call(MUL, pair(a, b), CallOptions::new())
        .await
        .unwrap();
    (answer(&reply).c, reply.from_cache)
}

#[tokio::test]
async fn hit_miss_and_expiry() {
    let (arith, server, channel, clock) = setup(ServerConfig::default());
    assert_eq!(mul(&channel, 6, 7).await, (42, false));
    assert_eq!(mul(&channel, 6, 7).await, (42, true));
    assert_eq!(
        mul(&channel, 7, 6).await,
        (42, false),
        "another request, another key"
    );
    assert_eq!(arith.handled.load(Ordering::SeqCst), 2);
    let reply = channel
        .call(MUL, pair(6, 7), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        reply.computed_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)),
        "a hit says when it was computed"
    );
    clock.advance(3599);
    assert_eq!(
        mul(&channel, 6, 7).await,
        (42, true),
        "(expire) = 3600 not yet passed"
    );
    clock.advance(1);
    assert_eq!(
        mul(&channel, 6, 7).await,
        (42, false),
        "expired after 3600 s"
    );
    assert_eq!(mul(&channel, 6, 7).await, (42, true), "and cached again");
    assert_eq!(arith.handled.load(Ordering::SeqCst), 3);
    let stats = server.stats();
    assert_eq!(stats.cache_hits.load(Ordering::SeqCst), 4);
    assert_eq!(stats.cache_misses.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn touching_an_entity_makes_only_its_answers_stale() {
    let (arith, _server, channel, clock) = setup(ServerConfig::default());
    assert_eq!(mul(&channel, 1, 2).await, (2, false));
    assert_eq!(mul(&channel, 3, 4).await, (12, false));
    clock.advance(1);
    // A write to entity a=1, through a handler's CallContext::touch.
    channel
        .call(TOUCH, pair(1, 0), CallOptions::new())
        .await
        .unwrap();
    clock.advance(1);
    assert_eq!(
        mul(&channel, 1, 2).await,
        (2, false),
        "Multiply(1,2) names a=1: stale"
    );
    assert_eq!(
        mul(&channel, 3, 4).await,
        (12, true),
        "Multiply(3,4) names a=3, b=4: still fresh"
    );
    assert_eq!(
        mul(&channel, 1, 2).await,
        (2, true),
        "recomputed after the touch: fresh again"
    );
    // Multiply(2, 1) names a=2 and b=1; Multiply(1, 2) names a=1 and b=2.
    assert_eq!(mul(&channel, 2, 1).await, (2, false));
    clock.advance(1);
    channel
        .call(TOUCH, pair(2, 0), CallOptions::new())
        .await
        .unwrap(); // a=2
    clock.advance(1);
    assert_eq!(mul(&channel, 2, 1).await, (2, false));
    assert_eq!(mul(&channel, 1, 2).await, (2, true));
    // Multiply(3,4) computed now, and a=3 touched in the same second: the
    // touch counts as after the computation.
    clock.advance(1);
    channel
        .call(TOUCH, pair(3, 0), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(mul(&channel, 3, 4).await, (12, false));
    channel
        .call(TOUCH, pair(3, 0), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(mul(&channel, 3, 4).await, (12, false));
    // 2 first calls, 4 touches, Mul(1,2) once more, Mul(2,1) twice, Mul(3,4) twice.
    assert_eq!(arith.handled.load(Ordering::SeqCst), 2 + 4 + 1 + 2 + 2);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let (arith, server, channel, _clock) = setup(ServerConfig::default());
    for _ in 0..2 {
        let err = channel
            .call(FAIL, pair(1, 1), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::UNKNOWN);
        assert_eq!(err.message(), "always fails");
    }
    assert_eq!(arith.handled.load(Ordering::SeqCst), 2);
    assert_eq!(server.stats().errors.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bypass_per_call_and_switch_per_server() {
    let (arith, _server, channel, _clock) = setup(ServerConfig::default());
    let bypass = CallOptions::new().no_cache();
    let reply = channel.call(MUL, pair(2, 3), bypass).await.unwrap();
    assert!(!reply.from_cache);
    assert_eq!(
        mul(&channel, 2, 3).await,
        (6, false),
        "a bypassing call does not fill the cache"
    );
    assert_eq!(mul(&channel, 2, 3).await, (6, true));
    let reply = channel.call(MUL, pair(2, 3), bypass).await.unwrap();
    assert!(!reply.from_cache, "nor is it answered from it");
    assert_eq!(arith.handled.load(Ordering::SeqCst), 3);

    let mut config = ServerConfig::default();
    config.cache = false;
    let (arith, _server, channel, _clock) = setup(config);
    assert_eq!(mul(&channel, 2, 3).await, (6, false));
    assert_eq!(mul(&channel, 2, 3).await, (6, false));
    assert_eq!(arith.handled.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn keys_are_canonical_requests() {
    let (arith, server, channel, _clock) = setup(ServerConfig::default());
    assert_eq!(mul(&channel, 1, 2).await, (2, false));
    // The same message with its fields in the other order.
    let reversed = wish_core::Bytes::from_static(&[0x10, 0x02, 0x08, 0x01]);
    let reply = channel
        .call(MUL, reversed, CallOptions::new())
        .await
        .unwrap();
    assert_eq!((answer(&reply).c, reply.from_cache), (2, true));
    // A request that is not well-formed is passed to the handler, uncached.
    let broken = wish_core::Bytes::from_static(&[0x08]);
    let err = channel
        .call(MUL, broken, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::INVALID_ARGUMENT);
    assert_eq!(arith.handled.load(Ordering::SeqCst), 2);
    // Field a as fixed32: the entity a=... cannot be read, so the request is
    // not keyed at all (not a miss that could never be a hit).
    let misses = server.stats().cache_misses.load(Ordering::SeqCst);
    let unreadable = wish_core::Bytes::from_static(&[0x0d, 1, 0, 0, 0, 0x10, 0x02]);
    let _ = channel.call(MUL, unreadable, CallOptions::new()).await;
    assert_eq!(server.stats().cache_misses.load(Ordering::SeqCst), misses);
}

fn wire_flags(frame: wish_core::Frame) -> u8 {
    let mut out = BytesMut::new();
    FrameCodec::new().encode(frame, &mut out).unwrap();
    out[6]
}

#[tokio::test]
async fn compression_follows_the_option_the_call_and_the_server() {
    let request = |method: &MethodDesc, plain_response| RequestFrame {
        method: method.id,
        deadline: None,
        no_cache: false,
        plain_response,
        compress: false,
        payload: pair(1000, 0),
    };
    let now = SystemTime::UNIX_EPOCH;
    let (_arith, server, channel, _clock) = setup(ServerConfig::default());
    let text = server.handle(1, request(TEXT, false), now).await;
    assert_eq!(
        wire_flags(text) & 3,
        1,
        "(compress): 5000 bytes of text go out lz4"
    );
    let plain = server.handle(2, request(TEXT, true), now).await;
    assert_eq!(
        wire_flags(plain) & 3,
        0,
        "the call asked for a plain response"
    );
    let add = server.handle(3, request(ADD, false), now).await;
    assert!(
        matches!(&add.body, Body::Response(r) if !r.compress),
        "no (compress) on Add"
    );
    let reply = channel
        .call(TEXT, pair(1000, 0), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        answer(&reply).text.len(),
        5000,
        "and decompressed on the way in"
    );

    let mut config = ServerConfig::default();
    config.compress = false;
    let (_arith, server, _channel, _clock) = setup(config);
    let text = server.handle(1, request(TEXT, false), now).await;
    assert_eq!(wire_flags(text) & 3, 0, "switched off server-wide");
}

#[tokio::test]
async fn a_client_side_cache_answers_without_a_call() {
    let (arith, cached, layer, clock) = client_cache();
    let handled = || arith.handled.load(Ordering::SeqCst);
    assert_eq!(mul(&cached, 4, 5).await, (20, false));
    assert_eq!(mul(&cached, 4, 5).await, (20, true));
    assert_eq!(handled(), 1);
    let add = cached
        .call(ADD, pair(4, 5), CallOptions::new())
        .await
        .unwrap();
    assert!(!add.from_cache, "Add has no (cache)");
    assert_eq!(handled(), 2);
    // Bypassing: neither answered from the cache nor evicting it.
    let bypass = cached
        .call(MUL, pair(4, 5), CallOptions::new().no_cache())
        .await
        .unwrap();
    assert!(!bypass.from_cache);
    assert_eq!(handled(), 3);
    assert_eq!(mul(&cached, 4, 5).await, (20, true));
    // Errors are not cached on the client either.
    for _ in 0..2 {
        assert!(
            cached
                .call(FAIL, pair(1, 1), CallOptions::new())
                .await
                .is_err()
        );
    }
    assert_eq!(handled(), 5);
    // The client's timestamp store invalidates its entries.
    clock.advance(1);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_001);
    layer.timestamps().touch("b=5", t).await;
    clock.advance(1);
    assert_eq!(mul(&cached, 4, 5).await, (20, false), "b=5 changed");
    assert_eq!(mul(&cached, 4, 5).await, (20, true));
    assert_eq!(handled(), 6);
}

#[tokio::test]
async fn a_client_keeps_the_servers_computed_at_for_answers_from_its_cache() {
    let (_arith, server, channel, clock) = setup(ServerConfig::default());
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(
        mul(&channel, 7, 8).await,
        (56, false),
        "computed at t0 on the server"
    );
    clock.advance(10);
    let layer = CacheLayer::new(
        Arc::new(LruCache::new(100, 1 << 20)),
        Arc::new(MemoryTimestamps::new(100)),
    );
    let cached = CachingChannel::new(channel, layer.clone(), clock.clock());
    let reply = cached
        .call(MUL, pair(7, 8), CallOptions::new())
        .await
        .unwrap();
    assert_eq!((reply.from_cache, reply.computed_at), (true, Some(t0)));
    let server_hits = || server.stats().cache_hits.load(Ordering::SeqCst);
    assert_eq!(server_hits(), 1);
    // a=7 changed at t0 + 5: after the answer was computed, before the client
    // fetched it. The client must not take it for fresh.
    layer
        .timestamps()
        .touch("a=7", t0 + Duration::from_secs(5))
        .await;
    cached
        .call(MUL, pair(7, 8), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(server_hits(), 2, "the client asked the server again");
}

#[tokio::test]
async fn unknown_methods_and_bad_tables() {
    let (_arith, server, _channel, _clock) = setup(ServerConfig::default());
    let frame = server
        .handle(
            9,
            RequestFrame {
                method: 12345,
                deadline: None,
                no_cache: false,
                plain_response: false,
                compress: false,
                payload: pair(1, 1),
            },
            SystemTime::UNIX_EPOCH,
        )
        .await;
    assert!(
        matches!(&frame.body, Body::Error(s) if s.code() == Code::NOT_FOUND),
        "{frame:?}"
    );
    assert_eq!(frame.id, 9);

    let cloned = server.clone().with_service(Svc(Arc::new(Arith::default())));
    assert!(
        matches!(cloned, Err(Error::Table(m)) if m.contains("before the server is cloned")),
        "services are added before the server is cloned"
    );
    let twice = Server::new(ServerConfig::default())
        .with_service(Svc(Arc::new(Arith::default())))
        .unwrap()
        .with_service(Svc(Arc::new(Arith::default())));
    assert!(matches!(twice, Err(Error::Table(m)) if m.contains("test.Arith.Mul")));

    static BAD: ServiceDesc = ServiceDesc::new(
        "test.Bad",
        &[MethodDesc::new(
            "test.Bad.M",
            MethodOptions {
                expire: Some(5),
                ..MethodOptions::new()
            },
        )],
    );
    let err = BAD.check().unwrap_err();
    assert_eq!(
        err.to_string(),
        "service test.Bad, method M: (expire) needs (cache) = true"
    );
}

#[tokio::test]
async fn every_answer_of_a_cache_method_says_when_it_was_computed() {
    let (_arith, _server, channel, clock) = setup(ServerConfig::default());
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let miss = channel
        .call(MUL, pair(2, 3), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        (miss.from_cache, miss.computed_at),
        (false, Some(t0)),
        "a miss"
    );
    clock.advance(5);
    let bypass = channel
        .call(MUL, pair(2, 3), CallOptions::new().no_cache())
        .await
        .unwrap();
    assert_eq!(
        (bypass.from_cache, bypass.computed_at),
        (false, Some(t0 + Duration::from_secs(5))),
        "a call that bypasses the cache, computed now"
    );
    let plain = channel
        .call(ADD, pair(2, 3), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        (plain.from_cache, plain.computed_at),
        (false, None),
        "a method without (cache) carries no timestamp"
    );
}

/// A request that sends two members of one `oneof` is never answered from
/// the cache: the last one sent wins, and its sorted key could not say
/// which (`a=4 b=5` and `b=5 a=4` would share it). Here `Mul`'s a and b
/// stand for the two members.
#[tokio::test]
async fn two_members_of_a_oneof_are_not_cached() {
    static ONEOF_MUL: MethodDesc = MethodDesc::new(
        "test.Arith.Mul",
        MethodOptions::new().cache(3600).compress(),
    )
    .request_oneofs(&[&[1, 2]]);
    let (arith, cached, _layer, _clock) = client_cache();
    let handled = || arith.handled.load(Ordering::SeqCst);
    for round in 1..=2 {
        let reply = cached
            .call(&ONEOF_MUL, pair(4, 5), CallOptions::new())
            .await
            .unwrap();
        assert!(!reply.from_cache);
        assert_eq!(handled(), round);
    }
    // One member only: keyed and cached as before.
    let only_a = wish_core::Bytes::from_static(&[0x08, 0x04]);
    for from_cache in [false, true] {
        let reply = cached
            .call(&ONEOF_MUL, only_a.clone(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(reply.from_cache, from_cache);
    }
    assert_eq!(handled(), 3);
}
