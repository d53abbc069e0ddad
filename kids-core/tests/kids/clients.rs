//! Real clients against kids: redis-cli and the `redis` crate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use futures::StreamExt;
use kids_core::RouterConfig;
use test_support::{Process, peer, redis_cli as cli};

use super::support::KidsServer;

/// Starts `redis-cli ... <mode> <names>` and reads lines until `ready` lines arrived.
fn listening(
    bin: &Path,
    port: u16,
    args: &[&str],
    ready: usize,
) -> (Process, impl Iterator<Item = String>) {
    let mut cmd = Command::new(bin);
    cmd.args(["-p", &port.to_string()]).args(args);
    let (process, stdout) = Process::start_with_stdout("redis-cli", cmd).expect("start redis-cli");
    let mut lines = BufReader::new(stdout)
        .lines()
        .map(|l| l.expect("line from redis-cli"));
    for _ in 0..ready {
        lines.next().expect("subscription confirmation");
    }
    (process, lines)
}

#[test]
fn redis_cli_publish_subscribe_psubscribe() {
    let Some(bin) = peer("redis-cli", "redis-tools") else {
        return;
    };
    let kids = KidsServer::start(RouterConfig::default());
    assert_eq!(cli(&bin, kids.port, &["ping"]), "PONG\n");
    assert_eq!(cli(&bin, kids.port, &["publish", "news", "nobody"]), "0\n");

    // `redis-cli subscribe` prints each reply element on its own line.
    let (_sub, mut sub_lines) = listening(&bin, kids.port, &["subscribe", "news"], 3);
    let (_psub, mut psub_lines) = listening(&bin, kids.port, &["psubscribe", "n*"], 3);
    assert_eq!(
        cli(&bin, kids.port, &["pubsub", "numsub", "news"]),
        "news\n1\n"
    );
    assert_eq!(
        cli(&bin, kids.port, &["publish", "news", "hello world"]),
        "2\n"
    );
    assert_eq!(cli(&bin, kids.port, &["log", "news", "second"]), "2\n");
    let got: Vec<String> = sub_lines.by_ref().take(6).collect();
    assert_eq!(
        got,
        [
            "message",
            "news",
            "hello world",
            "message",
            "news",
            "second"
        ]
    );
    let got: Vec<String> = psub_lines.by_ref().take(8).collect();
    assert_eq!(
        got,
        [
            "pmessage",
            "n*",
            "news",
            "hello world",
            "pmessage",
            "n*",
            "news",
            "second"
        ]
    );

    // `help` makes redis-cli fetch and parse COMMAND DOCS, as interactive mode does at start.
    let help = cli(&bin, kids.port, &["help", "publish"]);
    assert!(
        help.contains("channel message") && help.contains("Posts a message to a channel."),
        "{help}"
    );
    let help = cli(&bin, kids.port, &["help", "hello"]);
    assert!(
        help.contains("[AUTH username password]") && help.contains("[SETNAME clientname]"),
        "{help}"
    );
    assert!(
        cli(&bin, kids.port, &["help", "client", "setinfo"])
            .contains("LIB-NAME libname|LIB-VER libver")
    );

    // RESP3 through redis-cli -3, and INFO's kids section.
    assert_eq!(cli(&bin, kids.port, &["-3", "publish", "news", "x"]), "2\n");
    let info = cli(&bin, kids.port, &["info", "kids"]);
    assert!(info.contains("messages_in:4"), "{info}");
    assert!(info.contains("topic_news:messages=4"), "{info}");
}

#[test]
fn redis_crate_async_pubsub_resp2_and_resp3() {
    let kids = KidsServer::start(RouterConfig::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // A channel per round: the last round's connections may still be
        // closing (the client drops them without waiting) and would count.
        // A user and password in the URL: the client sends AUTH (RESP2) or
        // HELLO 3 AUTH, which Redis's passwordless default user accepts.
        for (round, url) in [
            format!("redis://127.0.0.1:{}/", kids.port),
            format!("redis://127.0.0.1:{}/?protocol=resp3", kids.port),
            format!("redis://default:secret@127.0.0.1:{}/", kids.port),
            format!(
                "redis://default:secret@127.0.0.1:{}/?protocol=resp3",
                kids.port
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let (channel, pattern) = (format!("news{round}"), format!("n?ws{round}"));
            let client = redis::Client::open(url.as_str()).expect("client");
            let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
            pubsub.subscribe(&channel).await.expect("subscribe");
            pubsub.psubscribe(&pattern).await.expect("psubscribe");
            let mut publisher = client
                .get_multiplexed_async_connection()
                .await
                .expect("connection");
            let receivers: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg("hello")
                .query_async(&mut publisher)
                .await
                .expect("publish");
            assert_eq!(receivers, 2, "{url}");
            let pong: String = redis::cmd("PING")
                .query_async(&mut publisher)
                .await
                .expect("ping");
            assert_eq!(pong, "PONG");
            let mut messages = pubsub.on_message();
            let first = messages.next().await.expect("message");
            assert_eq!(first.get_channel_name(), channel);
            assert_eq!(first.get_payload::<String>().expect("payload"), "hello");
            assert!(!first.from_pattern());
            let second = messages.next().await.expect("pmessage");
            assert_eq!(second.get_pattern::<String>().expect("pattern"), pattern);
            assert_eq!(second.get_payload::<String>().expect("payload"), "hello");
        }
    });
}
