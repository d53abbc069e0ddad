//! The tokio client against a real beanstalkd: every `Queue` method.

use std::time::Duration;

use miller_core::{Client, Error, PutParams, Queue, QueueError};
use test_support::Beanstalkd;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_queue_method_against_beanstalkd() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    rt().block_on(async {
        let addr = ("127.0.0.1", server.port);
        let mut c = Client::connect(addr).await.unwrap();
        let mut other = Client::connect(addr).await.unwrap();
        c.use_tube("jobs").await.unwrap();
        assert_eq!(c.list_tube_used().await.unwrap(), "jobs");
        let p = |priority| PutParams {
            priority,
            ..PutParams::default()
        };
        let a = c.put("a".into(), p(10)).await.unwrap();
        let b = c.put("b".into(), p(5)).await.unwrap();
        let ids = c
            .put_batch(vec![
                ("c".into(), p(7)),
                (vec![b'x'; 70_000].into(), p(1)),
                ("d".into(), p(7)),
            ])
            .await
            .unwrap();
        assert!(
            matches!(ids[1], Err(Error::Queue(QueueError::JobTooBig))),
            "{ids:?}"
        );
        let (cid, did) = (*ids[0].as_ref().unwrap(), *ids[2].as_ref().unwrap());
        assert!(a < b && b < cid && cid < did);
        assert_eq!(
            c.peek_ready().await.unwrap().unwrap().id,
            b,
            "most urgent first"
        );
        assert_eq!(c.watch("jobs").await.unwrap(), 2);
        assert_eq!(c.ignore("default").await.unwrap(), 1);
        assert!(matches!(
            c.ignore("jobs").await,
            Err(Error::Queue(QueueError::NotIgnored))
        ));
        assert_eq!(c.list_tubes_watched().await.unwrap(), vec!["jobs"]);
        let mut tubes = c.list_tubes().await.unwrap();
        tubes.sort();
        assert_eq!(tubes, vec!["default", "jobs"]);
        // Priority order, then id order.
        let order: Vec<u64> = [
            c.reserve(None).await.unwrap().unwrap(),
            c.reserve(Some(Duration::ZERO)).await.unwrap().unwrap(),
            c.reserve(Some(Duration::ZERO)).await.unwrap().unwrap(),
        ]
        .iter()
        .map(|j| j.id)
        .collect();
        assert_eq!(order, vec![b, cid, did]);
        // Only the reserving client may release it.
        assert!(matches!(
            other.release(b, 1, Duration::ZERO).await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        c.touch(b).await.unwrap();
        c.release(b, 1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.peek_delayed().await.unwrap().unwrap().id, b);
        c.bury(cid, 3).await.unwrap();
        assert_eq!(c.peek_buried().await.unwrap().unwrap().body, "c");
        assert_eq!(c.stats_job(cid).await.unwrap().get("state"), Some("buried"));
        assert_eq!(c.kick(10).await.unwrap(), 1, "buried first");
        c.kick_job(b).await.unwrap();
        assert_eq!(c.stats_job(b).await.unwrap().get("state"), Some("ready"));
        assert!(matches!(
            c.kick_job(b).await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        assert_eq!(c.peek(a).await.unwrap().unwrap().body, "a");
        assert_eq!(c.peek(999_999).await.unwrap(), None);
        for id in [a, b, cid, did] {
            c.delete(id).await.unwrap();
        }
        assert!(matches!(
            c.delete(a).await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        assert_eq!(
            c.reserve(Some(Duration::ZERO)).await.unwrap(),
            None,
            "TIMED_OUT"
        );
        let stats = c.stats_tube("jobs").await.unwrap();
        assert_eq!(stats.get("name"), Some("jobs"));
        assert_eq!(stats.number("total-jobs"), Some(4));
        assert!(
            c.stats()
                .await
                .unwrap()
                .number("current-connections")
                .unwrap()
                >= 2
        );
        c.pause_tube("jobs", Duration::from_secs(1)).await.unwrap();
        assert!(matches!(
            c.pause_tube("nope", Duration::from_secs(1)).await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        // A reserve-job takes a job in any state but reserved.
        let e = c.put("e".into(), p(1)).await.unwrap();
        assert_eq!(other.reserve_job(e).await.unwrap().body, "e");
        assert!(matches!(
            c.reserve_job(e).await,
            Err(Error::Queue(QueueError::NotFound))
        ));
        // Tube names are checked before anything is sent.
        assert!(matches!(
            c.use_tube("a b\r\nquit").await,
            Err(Error::Queue(QueueError::BadFormat))
        ));
        assert_eq!(c.list_tube_used().await.unwrap(), "jobs");
    });
}

#[test]
fn a_call_cut_short_leaves_the_client_closed() {
    let Some(server) = Beanstalkd::start() else {
        return;
    };
    rt().block_on(async {
        let mut c = Client::connect(("127.0.0.1", server.port)).await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(50), c.reserve(None)).await;
        assert!(cut.is_err(), "nothing to reserve: the call is cut");
        assert!(matches!(c.stats().await, Err(Error::Closed)));
    });
}
