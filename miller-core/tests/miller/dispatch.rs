//! Master and worker against a real beanstalkd: jobs run, retries, bury with last_error, panics, unknown handlers, touches, graceful stop.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use miller_core::dispatch::{
    DedupeKey, Envelope, Event, HandlerError, Master, MasterConfig, Registry, RetryPolicy,
    VecSource, Worker, WorkerConfig,
};
use miller_core::{Client, Error, PutParams, Queue};
use test_support::Beanstalkd;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

fn connect(
    port: u16,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Client, Error>> + Send>>
+ Send
+ Sync
+ 'static {
    move || Box::pin(Client::connect(("127.0.0.1", port)))
}

fn worker_config(tube: &str) -> WorkerConfig {
    WorkerConfig {
        tubes: vec![tube.into()],
        concurrency: 2,
        retry: RetryPolicy {
            base: Duration::ZERO,
            max_attempts: 3,
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        grace: Duration::from_secs(5),
        reserve_timeout: Duration::from_millis(200),
        ..WorkerConfig::default()
    }
}

/// Waits (at most 20 s) for `cond`, checking every 20 ms.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 20 s");
}

/// Puts `events` through a master into beanstalk at `port`.
async fn master_puts(
    registry: Arc<Registry>,
    port: u16,
    events: Vec<Event>,
) -> (VecSource, Master) {
    let mut source = VecSource::new(events);
    let mut master = Master::new(registry, MasterConfig::default());
    master
        .run(&mut source, connect(port), std::future::pending())
        .await
        .unwrap();
    (source, master)
}

#[test]
fn events_become_jobs_and_handlers_see_the_data_as_published() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    let seen: Seen = Arc::default();
    let mut registry = Registry::new();
    for name in ["one", "two"] {
        let seen = seen.clone();
        registry.on("activity.INVITE", "zhihu", name, move |event, data| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((event, data));
                Ok(())
            }
        });
    }
    let registry = Arc::new(registry);
    rt().block_on(async {
        let events: Vec<Event> = (0..50u8)
            .map(|i| Event::new("activity.INVITE", "zhihu", vec![i, 0xff, b'x']))
            .chain([Event::new("activity.OTHER", "zhihu", "nobody")])
            .collect();
        let (source, master) = master_puts(registry.clone(), server.port, events).await;
        assert_eq!(
            source.acked(),
            (0..51).collect::<Vec<u64>>(),
            "every event acknowledged, in order"
        );
        assert_eq!((master.stats().jobs, master.stats().unmatched), (100, 1));
        let worker = Worker::new(registry, worker_config("zhihu"));
        let stats = worker.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            worker
                .run(connect(server.port), async {
                    let _ = rx.await;
                })
                .await
        });
        until("100 jobs run", || {
            stats.succeeded.load(Ordering::Relaxed) == 100
        })
        .await;
        tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        let mut c = Client::connect(("127.0.0.1", server.port)).await.unwrap();
        let all = c.stats().await.unwrap();
        assert_eq!(all.number("total-jobs"), Some(100));
        assert_eq!(all.number("cmd-delete"), Some(100));
        assert_eq!(all.number("current-jobs-ready"), Some(0));
    });
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut want: Vec<(String, Bytes)> = (0..50u8)
        .flat_map(|i| {
            [0, 1].map(|_| {
                (
                    "activity.INVITE".to_string(),
                    Bytes::from(vec![i, 0xff, b'x']),
                )
            })
        })
        .collect();
    want.sort();
    assert_eq!(seen, want, "each handler saw each event's bytes once");
}

/// The buried job of `tube`, decoded.
async fn buried(port: u16, tube: &str) -> (u64, Envelope, miller_core::Stats) {
    let mut c = Client::connect(("127.0.0.1", port)).await.unwrap();
    c.use_tube(tube).await.unwrap();
    let job = c.peek_buried().await.unwrap().expect("a buried job");
    let stats = c.stats_job(job.id).await.unwrap();
    (job.id, Envelope::decode(&job.body, 1 << 20).unwrap(), stats)
}

#[test]
fn failures_are_retried_then_buried_with_the_last_error_and_panics_are_failures() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    let tries = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    let t = tries.clone();
    registry.on("e.fail", "app", "fails", move |_, data| {
        t.lock().unwrap().push(data);
        async { Err(HandlerError::new("smtp said no")) }
    });
    registry.on("e.panic", "panics", "panics", |_, _| async {
        panic!("handler bug")
    });
    registry.on_json(
        "e.json",
        "json",
        "typed",
        |_, _v: serde_json::Value| async { Ok(()) },
    );
    let registry = Arc::new(registry);
    rt().block_on(async {
        let events = vec![
            Event::new("e.fail", "app", "d1"),
            Event::new("e.panic", "panics", "d2"),
            Event::new("e.json", "json", "{not json"),
        ];
        master_puts(registry.clone(), server.port, events).await;
        let mut config = worker_config("app");
        config.tubes = vec!["app".into(), "panics".into(), "json".into()];
        let worker = Worker::new(registry, config);
        let stats = worker.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            worker
                .run(connect(server.port), async {
                    let _ = rx.await;
                })
                .await
        });
        until("three jobs buried", || {
            stats.buried.load(Ordering::Relaxed) == 3
        })
        .await;
        tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(
            stats.retried.load(Ordering::Relaxed),
            6,
            "two releases per job before the third try"
        );
        assert_eq!(
            stats.panicked.load(Ordering::Relaxed),
            3,
            "the panicking handler failed three times, the worker lived"
        );
        assert_eq!(tries.lock().unwrap().len(), 3);

        let (_, env, job) = buried(server.port, "app").await;
        assert_eq!(
            (env.attempt, env.last_error.as_deref(), &env.data[..]),
            (3, Some("smtp said no"), &b"d1"[..])
        );
        assert_eq!(job.get("state"), Some("buried"));
        let (_, env, _) = buried(server.port, "panics").await;
        assert_eq!(
            env.last_error.as_deref(),
            Some("handler panicked: handler bug")
        );
        let (_, env, _) = buried(server.port, "json").await;
        assert!(
            env.last_error
                .unwrap()
                .starts_with("bad JSON data: key must be a string")
        );
        let mut c = Client::connect(("127.0.0.1", server.port)).await.unwrap();
        for tube in ["app", "panics", "json"] {
            let s = c.stats_tube(tube).await.unwrap();
            assert_eq!(s.number("current-jobs-buried"), Some(1), "{tube}");
            assert_eq!(
                s.number("current-jobs-ready"),
                Some(0),
                "{tube}: the original was deleted"
            );
            assert_eq!(
                s.number("current-jobs-delayed"),
                Some(0),
                "{tube}: the copy was buried"
            );
        }
    });
}

#[test]
fn unknown_handler_and_app_and_garbage_are_buried_with_the_reason() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    let mut registry = Registry::new();
    registry.on("e", "app", "known", |_, _| async { Ok(()) });
    let registry = Arc::new(registry);
    rt().block_on(async {
        let mut c = Client::connect(("127.0.0.1", server.port)).await.unwrap();
        c.use_tube("app").await.unwrap();
        let env = |app: &str, handler: &str| Envelope {
            event: "e".into(),
            app: app.into(),
            handler: handler.into(),
            data: Bytes::from_static(b"x"),
            attempt: 0,
            first_seen: 1,
            ttr: Some(10),
            last_error: None,
        };
        let p = PutParams::default();
        c.put(env("app", "gone").encode(1 << 16).unwrap(), p)
            .await
            .unwrap();
        c.put(env("elsewhere", "known").encode(1 << 16).unwrap(), p)
            .await
            .unwrap();
        let garbage = c
            .put(Bytes::from_static(b"not an envelope"), p)
            .await
            .unwrap();
        let worker = Worker::new(registry, worker_config("app"));
        let stats = worker.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            worker
                .run(connect(server.port), async {
                    let _ = rx.await;
                })
                .await
        });
        until("three buried", || stats.buried.load(Ordering::Relaxed) == 3).await;
        tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        let mut reasons = Vec::new();
        while let Some(job) = c.peek_buried().await.unwrap() {
            match Envelope::decode(&job.body, 1 << 16) {
                Ok(e) => reasons.push(e.last_error.unwrap()),
                Err(_) => assert_eq!(job.id, garbage, "garbage is buried as it is"),
            }
            c.delete(job.id).await.unwrap();
        }
        reasons.sort();
        assert_eq!(
            reasons,
            [
                "unknown app \"elsewhere\"",
                "unknown handler \"gone\" of app \"app\""
            ]
        );
    });
}

#[test]
fn long_jobs_are_touched_and_shutdown_releases_what_outlives_the_grace() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    let mut registry = Registry::new();
    registry.on("e", "app", "slow", |_, data| async move {
        let secs = if &data[..] == b"forever" { 3600 } else { 3 };
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Ok(())
    });
    let registry = Arc::new(registry);
    rt().block_on(async {
        let mut master = Master::new(
            registry.clone(),
            MasterConfig {
                put: PutParams {
                    ttr: Duration::from_secs(2),
                    ..PutParams::default()
                },
                ..MasterConfig::default()
            },
        );
        let mut source = VecSource::new([Event::new("e", "app", "3s")]);
        master
            .run(&mut source, connect(server.port), std::future::pending())
            .await
            .unwrap();
        let mut config = worker_config("app");
        config.run_limit = Some(Duration::from_secs(10));
        config.concurrency = 1;
        let worker = Worker::new(registry.clone(), config.clone());
        let stats = worker.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            worker
                .run(connect(server.port), async {
                    let _ = rx.await;
                })
                .await
        });
        until("the 3 s job done", || {
            stats.succeeded.load(Ordering::Relaxed) == 1
        })
        .await;
        assert!(
            stats.touched.load(Ordering::Relaxed) >= 1,
            "touched within its 2 s TTR"
        );
        assert_eq!(
            stats.reserved.load(Ordering::Relaxed),
            1,
            "never timed out and reserved again"
        );

        // A job still running when the grace ends is released, ready at once.
        let mut source = VecSource::new([Event::new("e", "app", "forever")]);
        master
            .run(&mut source, connect(server.port), std::future::pending())
            .await
            .unwrap();
        until("the endless job reserved", || {
            stats.reserved.load(Ordering::Relaxed) == 2
        })
        .await;
        tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(stats.released_at_stop.load(Ordering::Relaxed), 1);
        let mut c = Client::connect(("127.0.0.1", server.port)).await.unwrap();
        let s = c.stats_tube("app").await.unwrap();
        assert_eq!(s.number("current-jobs-ready"), Some(1));
        assert_eq!(s.number("current-jobs-reserved"), Some(0));
    });
}

#[test]
fn a_job_that_finishes_within_the_grace_is_deleted_at_shutdown() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    let mut registry = Registry::new();
    registry.on("e", "app", "h", |_, _| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    });
    let registry = Arc::new(registry);
    rt().block_on(async {
        master_puts(
            registry.clone(),
            server.port,
            vec![Event::new("e", "app", "x")],
        )
        .await;
        let worker = Worker::new(registry, worker_config("app"));
        let stats = worker.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            worker
                .run(connect(server.port), async {
                    let _ = rx.await;
                })
                .await
        });
        until("reserved", || stats.reserved.load(Ordering::Relaxed) == 1).await;
        tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(
            stats.succeeded.load(Ordering::Relaxed),
            1,
            "finished inside the grace"
        );
        let mut c = Client::connect(("127.0.0.1", server.port)).await.unwrap();
        let all = c.stats().await.unwrap();
        assert_eq!(
            (all.number("current-jobs-ready"), all.number("cmd-delete")),
            (Some(0), Some(1))
        );
    });
}

#[test]
fn dedupe_collapses_duplicates_of_one_handler_within_its_window() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    let mut registry = Registry::new();
    registry
        .on("e", "app", "once", |_, _| async { Ok(()) })
        .dedupe(
            DedupeKey::Field("MemberId".into()),
            Duration::from_secs(3600),
        );
    registry.on("e", "app", "every", |_, _| async { Ok(()) });
    let registry = Arc::new(registry);
    rt().block_on(async {
        let ev = |id: u32| Event::new("e", "app", format!("{{\"MemberId\":{id}}}"));
        let (_, master) = master_puts(
            registry.clone(),
            server.port,
            vec![ev(1), ev(2), ev(1), ev(1)],
        )
        .await;
        assert_eq!((master.stats().jobs, master.stats().deduped), (6, 2));
        let mut c = Client::connect(("127.0.0.1", server.port)).await.unwrap();
        assert_eq!(
            c.stats_tube("app")
                .await
                .unwrap()
                .number("current-jobs-ready"),
            Some(6)
        );
    });
}

/// On a simulated clock (the embedded engine's `LocalQueue` with a
/// `ManualClock`): a failing job is released after 10 s, then 20 s
/// (exponential backoff, no jitter), and buried at the third try with its
/// attempt count and last error; nothing happens before each delay ends.
#[test]
fn backoff_delays_on_a_simulated_clock_then_bury() {
    use miller_core::engine::{EngineConfig, LocalEngine, ManualClock};

    let clock = ManualClock::new();
    let engine = LocalEngine::with_clock(EngineConfig::default(), clock.clock());
    let mut registry = Registry::new();
    registry.on("e", "app", "fails", |_, _| async {
        Err(HandlerError::new("down"))
    });
    let registry = Arc::new(registry);
    rt().block_on(async {
        let mut source = VecSource::new([Event::new("e", "app", "x")]);
        let mut master = Master::new(registry.clone(), MasterConfig::default());
        let e = engine.clone();
        master
            .run(
                &mut source,
                move || std::future::ready(Ok(e.queue())),
                std::future::pending(),
            )
            .await
            .unwrap();
        let mut config = worker_config("app");
        config.concurrency = 1;
        config.reserve_timeout = Duration::from_secs(1);
        config.retry = RetryPolicy {
            base: Duration::from_secs(10),
            factor: 2.0,
            max_delay: Duration::from_secs(3600),
            max_attempts: 3,
            jitter: 0.0,
        };
        let worker = Worker::new(registry, config);
        let stats = worker.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let e = engine.clone();
        let run = tokio::spawn(async move {
            worker
                .run(move || std::future::ready(Ok(e.queue())), async {
                    let _ = rx.await;
                })
                .await
        });
        let mut q = engine.queue();
        let id = 1;
        until("the first try failed", || {
            stats.retried.load(Ordering::Relaxed) == 1
        })
        .await;
        let s = q.stats_job(id).await.unwrap();
        assert_eq!(
            (s.get("state"), s.number("delay")),
            (Some("delayed"), Some(10))
        );
        clock.advance(Duration::from_secs(9));
        engine.tick();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            stats.reserved.load(Ordering::Relaxed),
            1,
            "not before its delay"
        );
        clock.advance(Duration::from_secs(1));
        engine.tick();
        until("the second try failed", || {
            stats.retried.load(Ordering::Relaxed) == 2
        })
        .await;
        let s = q.stats_job(id).await.unwrap();
        assert_eq!(
            (s.get("state"), s.number("delay"), s.number("reserves")),
            (Some("delayed"), Some(20), Some(2))
        );
        clock.advance(Duration::from_secs(20));
        engine.tick();
        until("buried", || stats.buried.load(Ordering::Relaxed) == 1).await;
        tx.send(()).unwrap();
        // The stop ends the parked reserves (no tick needed).
        run.await.unwrap().unwrap();
        q.use_tube("app").await.unwrap();
        let job = q.peek_buried().await.unwrap().expect("buried");
        let env = Envelope::decode(&job.body, 1 << 16).unwrap();
        assert_eq!((env.attempt, env.last_error.as_deref()), (3, Some("down")));
        assert!(
            matches!(
                q.stats_job(id).await,
                Err(Error::Queue(miller_core::QueueError::NotFound))
            ),
            "the original is gone"
        );
    });
}

/// A scripted beanstalk peer on a loopback port: `USING` to every `use`,
/// `BURIED <n>` to every `put` (what beanstalkd answers when it cannot grow
/// its heap).
async fn burying_peer() -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                let mut next_id = 1;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let reply = match words.as_slice() {
                        ["use", tube] => format!("USING {tube}\r\n"),
                        ["put", _, _, _, len] => {
                            let mut body = vec![0; len.parse::<usize>().unwrap() + 2];
                            r.read_exact(&mut body).await.unwrap();
                            next_id += 1;
                            format!("BURIED {}\r\n", next_id - 1)
                        }
                        _ => "UNKNOWN_COMMAND\r\n".to_string(),
                    };
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_job_buried_as_it_is_put_is_counted_and_its_event_acknowledged() {
    rt().block_on(async {
        let port = burying_peer().await;
        let mut r = Registry::new();
        r.on("a.X", "zhihu", "h", |_, _| async { Ok(()) });
        let (source, master) = master_puts(
            Arc::new(r),
            port,
            vec![
                Event::new("a.X", "zhihu", &b"1"[..]),
                Event::new("a.X", "zhihu", &b"2"[..]),
            ],
        )
        .await;
        assert_eq!(source.acked(), [0, 1], "stored: acknowledged");
        let stats = master.stats();
        assert_eq!((stats.jobs, stats.buried_on_put), (2, 2));
    });
}

/// A worker on `engine` watching `app`, stopped by the returned sender.
fn local_worker(
    engine: &miller_core::engine::LocalEngine,
    registry: Arc<Registry>,
) -> (
    Arc<miller_core::dispatch::WorkerStats>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let worker = Worker::new(registry, worker_config("app"));
    let stats = worker.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let e = engine.clone();
    let run = tokio::spawn(async move {
        worker
            .run(move || std::future::ready(Ok(e.queue())), async {
                let _ = rx.await;
            })
            .await
    });
    (stats, tx, run)
}

#[test]
fn a_worker_stops_at_shutdown_while_its_reserves_wait_on_an_engine_whose_timers_nobody_runs() {
    use miller_core::engine::{EngineConfig, LocalEngine};

    // The real clock and no `run_timers`: a timed reserve never times out.
    let engine = LocalEngine::new(EngineConfig::default());
    rt().block_on(async {
        let (_stats, stop, run) = local_worker(&engine, Arc::new(Registry::new()));
        let mut q = engine.queue();
        let mut waiting = 0;
        for _ in 0..1000 {
            waiting = q
                .stats()
                .await
                .unwrap()
                .number("current-waiting")
                .unwrap_or(0);
            if waiting == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(waiting, 2, "both slots wait in a reserve");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the worker stops (within 10 s)")
            .unwrap()
            .unwrap();
    });
}

#[test]
fn a_stray_bury_copy_is_buried_again_unrun_and_runs_once_kicked() {
    use miller_core::engine::{EngineConfig, LocalEngine};

    let engine = LocalEngine::new(EngineConfig::default());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut registry = Registry::new();
    let r = runs.clone();
    registry.on("e", "app", "h", move |_, _| {
        r.fetch_add(1, Ordering::Relaxed);
        async { Ok(()) }
    });
    rt().block_on(async {
        let mut q = engine.queue();
        q.use_tube("app").await.unwrap();
        // What a worker stopped between putting the copy and burying it
        // leaves, once the copy's delay has passed.
        let copy = Envelope {
            event: "e".into(),
            app: "app".into(),
            handler: "h".into(),
            data: Bytes::from_static(b"x"),
            attempt: 3,
            first_seen: 1,
            ttr: Some(10),
            last_error: Some("down".into()),
        };
        let id = q
            .put(copy.encode(1 << 16).unwrap(), PutParams::default())
            .await
            .unwrap();
        let (stats, stop, run) = local_worker(&engine, Arc::new(registry));
        until("the copy buried again", || {
            stats.reburied.load(Ordering::Relaxed) == 1
        })
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 0, "not run");
        assert_eq!(q.stats_job(id).await.unwrap().get("state"), Some("buried"));
        assert_eq!(q.kick(1).await.unwrap(), 1);
        until("the kicked copy ran", || {
            stats.succeeded.load(Ordering::Relaxed) == 1
        })
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 1);
        assert_eq!(stats.reburied.load(Ordering::Relaxed), 1);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the worker stops (within 10 s)")
            .unwrap()
            .unwrap();
    });
}

/// A scripted RESP peer on a loopback port: reads what a client sends
/// first, answers `script`, then keeps the connection open (and answers
/// nothing more) until the client goes.
async fn scripted_resp_peer(script: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0; 4096];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                if stream.write_all(script).await.is_err() {
                    return;
                }
                while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
            });
        }
    });
    addr
}

#[test]
fn refusals_no_retry_can_cure_fail_the_network_sources_for_good() {
    use miller_core::dispatch::{EventSource, KidsSource, SinkSource};

    rt().block_on(async {
        let sink_cases: [(&'static [u8], &str); 4] = [
            (
                b"-ERR session s exists with other filters\r\n+OK\r\n",
                "SESSION CREATE",
            ),
            (b"+OK\r\n-BUSY session s is loaded\r\n", "BUSY"),
            (b"+OK\r\n-GAP offsets 3..9 are gone\r\n", "GAP"),
            (
                b"+OK\r\n+OK\r\n*3\r\n$11\r\nsession-end\r\n$1\r\ns\r\n$10\r\ntaken over\r\n",
                "ended the session: taken over",
            ),
        ];
        for (script, want) in sink_cases {
            let addr = scripted_resp_peer(script).await;
            let mut source = SinkSource::new(addr, "s", vec!["a.*".into()], "app");
            let got = tokio::time::timeout(Duration::from_secs(10), source.next_batch(10))
                .await
                .expect("an answer within 10 s, not retries for ever");
            match got {
                Err(Error::Source(e)) => assert!(e.contains(want), "{e}"),
                other => panic!("{want}: {other:?}"),
            }
        }
        let addr = scripted_resp_peer(b"-ERR unknown command 'SUBSCRIBE'\r\n").await;
        let mut source = KidsSource::new(addr, vec!["a".into()], vec![], "app");
        let got = tokio::time::timeout(Duration::from_secs(10), source.next_batch(10))
            .await
            .expect("an answer within 10 s, not retries for ever");
        assert!(
            matches!(&got, Err(Error::Source(e)) if e.contains("refused the subscription")),
            "{got:?}"
        );
    });
}
