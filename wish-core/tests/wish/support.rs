//! Shared fixtures: a hand-written service (built as generated code would be), a simulated clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use wish_core::{
    BoxFuture, Bytes, CallContext, Code, EntityField, FieldKind, MethodDesc, MethodOptions, Server,
    ServerConfig, Service, ServiceDesc, Status,
};

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct Pair {
    #[prost(int32, tag = "1")]
    pub a: i32,
    #[prost(int32, tag = "2")]
    pub b: i32,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct Answer {
    #[prost(int64, tag = "1")]
    pub c: i64,
    #[prost(string, tag = "2")]
    pub text: String,
}

const AB: &[EntityField] = &[
    EntityField {
        name: "a",
        number: 1,
        kind: FieldKind::Int32,
        default: "0",
    },
    EntityField {
        name: "b",
        number: 2,
        kind: FieldKind::Int32,
        default: "0",
    },
];

/// `test.Arith`: the options of the seed's Multiply on `Mul`, and methods
/// that fail, sleep, or answer big compressible text.
pub(crate) static ARITH: ServiceDesc = ServiceDesc::new(
    "test.Arith",
    &[
        MethodDesc::new(
            "test.Arith.Mul",
            MethodOptions::new().cache(3600).compress().timestamped(AB),
        ),
        MethodDesc::new("test.Arith.Add", MethodOptions::new()),
        MethodDesc::new("test.Arith.Fail", MethodOptions::new().cache(60)),
        MethodDesc::new("test.Arith.Sleep", MethodOptions::new()),
        MethodDesc::new("test.Arith.Text", MethodOptions::new().compress()),
        MethodDesc::new("test.Arith.Touch", MethodOptions::new()),
        MethodDesc::new("test.Arith.Panic", MethodOptions::new()),
        MethodDesc::new("test.Arith.Spin", MethodOptions::new()),
    ],
);

pub(crate) const MUL: &MethodDesc = &ARITH.methods[0];
pub(crate) const ADD: &MethodDesc = &ARITH.methods[1];
pub(crate) const FAIL: &MethodDesc = &ARITH.methods[2];
pub(crate) const SLEEP: &MethodDesc = &ARITH.methods[3];
pub(crate) const TEXT: &MethodDesc = &ARITH.methods[4];
pub(crate) const TOUCH: &MethodDesc = &ARITH.methods[5];
pub(crate) const PANIC: &MethodDesc = &ARITH.methods[6];
pub(crate) const SPIN: &MethodDesc = &ARITH.methods[7];

/// Counts the calls that reach it; `Sleep` waits `a` milliseconds and counts
/// the sleeps that were dropped before they finished; `Spin` computes for `a`
/// microseconds without awaiting, and answers `b` and the id of the task
/// that ran it.
#[derive(Default)]
pub(crate) struct Arith {
    pub handled: AtomicU64,
    pub dropped: Arc<AtomicU64>,
}

struct CountDrop(Arc<AtomicU64>, bool);

impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// [`Arith`] as a [`Service`].
pub(crate) struct Svc(pub Arc<Arith>);

impl Service for Svc {
    fn descriptor(&self) -> &'static ServiceDesc {
        &ARITH
    }

    fn call(
        &self,
        method: usize,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.0.handled.fetch_add(1, Ordering::SeqCst);
        let dropped = self.0.dropped.clone();
        Box::pin(async move {
            let p = <Pair as prost::Message>::decode(request)?;
            let answer = match method {
                0 => Answer {
                    c: i64::from(p.a) * i64::from(p.b),
                    text: String::new(),
                },
                1 => Answer {
                    c: i64::from(p.a) + i64::from(p.b),
                    text: String::new(),
                },
                2 => return Err(Status::new(Code::UNKNOWN, "always fails")),
                3 => {
                    let mut guard = CountDrop(dropped, false);
                    tokio::time::sleep(Duration::from_millis(p.a as u64)).await;
                    guard.1 = true;
                    Answer {
                        c: i64::from(p.b),
                        text: String::new(),
                    }
                }
                4 => Answer {
                    c: 0,
                    text: "wish ".repeat(p.a as usize),
                },
                5 => {
                    // Touches entity a=<a> at the call's start time plus b seconds.
                    ctx.touch(
                        &format!("a={}", p.a),
                        ctx.started() + Duration::from_secs(p.b as u64),
                    )
                    .await;
                    Answer {
                        c: 0,
                        text: String::new(),
                    }
                }
                6 => panic!("a handler bug"),
                7 => {
                    // Computes for `a` microseconds without awaiting.
                    let until = std::time::Instant::now() + Duration::from_micros(p.a as u64);
                    while std::time::Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    // The task that ran it: the connection's, or one of its own.
                    Answer {
                        c: i64::from(p.b),
                        text: format!("{:?}", tokio::task::try_id()),
                    }
                }
                _ => return Err(Status::new(Code::NOT_FOUND, "no such method")),
            };
            Ok(Bytes::from(prost::Message::encode_to_vec(&answer)))
        })
    }
}

/// A clock that moves only when told, in whole seconds since the epoch.
#[derive(Clone, Default)]
pub(crate) struct SimClock(pub Arc<AtomicU64>);

impl SimClock {
    pub(crate) fn at(secs: u64) -> SimClock {
        SimClock(Arc::new(AtomicU64::new(secs)))
    }

    pub(crate) fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    pub(crate) fn clock(&self) -> wish_core::Clock {
        let c = self.0.clone();
        Arc::new(move || SystemTime::UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst)))
    }
}

pub(crate) fn pair(a: i32, b: i32) -> Bytes {
    Bytes::from(prost::Message::encode_to_vec(&Pair { a, b }))
}

pub(crate) fn answer(reply: &wish_core::RawReply) -> Answer {
    <Answer as prost::Message>::decode(reply.payload.clone()).unwrap()
}

/// A server of [`Svc`] with `config`, serving on a loopback TCP port until
/// the runtime ends: its handler's counters, the server, and its address.
pub(crate) async fn start_with(config: ServerConfig) -> (Arc<Arith>, Server, String) {
    let arith = Arc::new(Arith::default());
    let server = Server::new(config)
        .with_service(Svc(arith.clone()))
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(wish_core::net::serve(
        listener,
        server.clone(),
        std::future::pending(),
    ));
    (arith, server, addr)
}

/// Polls `check` until it holds, as [`test_support::wait_for`] does but
/// without blocking the runtime; the causal event it waits for is already
/// under way.
pub(crate) async fn eventually(what: &str, check: impl Fn() -> bool) {
    test_support::Poll::default()
        .wait_for_async(what, check, tokio::time::sleep)
        .await;
}
