"""redis-py against a sink server: streams, consumer groups, a session consumer.

Run by sink-core's integration tests (tests/sink/server.rs) as
`python3 clients.py PORT`; prints `key value` lines the test checks and
exits non-zero on the first surprise.
"""

import sys

import redis


def main(port):
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    # Streams and a consumer group.
    ids = [r.xadd("pys", {"k": "v%d" % i, "n": str(i)}) for i in range(3)]
    assert ids == sorted(ids), ids
    print("xlen", r.xlen("pys"))
    entries = r.xrange("pys", "-", "+")
    assert entries == [(ids[i], {"k": "v%d" % i, "n": str(i)}) for i in range(3)], entries
    assert r.xrevrange("pys", "+", "-") == entries[::-1]
    assert r.xgroup_create("pys", "g", id="0") is True
    read = r.xreadgroup("g", "c1", {"pys": ">"}, count=10)
    assert read == [["pys", entries]], read
    print("xreadgroup", len(read[0][1]))
    print("xack", r.xack("pys", "g", ids[0]))
    summary = r.xpending("pys", "g")
    assert summary == {
        "pending": 2,
        "min": ids[1],
        "max": ids[2],
        "consumers": [{"name": "c1", "pending": 2}],
    }, summary
    print("pending", summary["pending"])
    detail = r.xpending_range("pys", "g", "-", "+", 10)
    assert [d["message_id"] for d in detail] == ids[1:], detail
    assert all(d["consumer"] == "c1" and d["times_delivered"] == 1 for d in detail), detail
    claimed = r.xclaim("pys", "g", "c2", 0, [ids[1]])
    assert claimed == [entries[1]], claimed
    auto = r.xautoclaim("pys", "g", "c2", 0, "0-0", count=10)
    assert auto[1] == entries[1:], auto
    info = r.xinfo_stream("pys")
    assert info["length"] == 3 and info["groups"] == 1, info
    assert info["last-generated-id"] == ids[2], info
    groups = r.xinfo_groups("pys")
    assert groups[0]["name"] == "g" and groups[0]["pending"] == 2, groups
    consumers = {c["name"]: c["pending"] for c in r.xinfo_consumers("pys", "g")}
    assert consumers == {"c1": 0, "c2": 2}, consumers
    assert r.xdel("pys", ids[0]) == 1
    assert r.xtrim("pys", maxlen=1, approximate=False) == 1
    assert r.xlen("pys") == 1

    # A session: created, then three messages on py.*, one on another topic.
    assert r.execute_command("SESSION", "CREATE", "pysess", "py.*") == "OK"
    offsets = [
        r.publish("py.a", "s0"),
        r.publish("other", "skipped"),
        r.publish("py.b", "s1"),
        r.publish("py.a", "s2"),
    ]
    assert offsets == sorted(offsets) and len(set(offsets)) == 4, offsets
    conn = r.connection_pool.get_connection("SESSION")
    try:
        conn.send_command("SESSION", "LOAD", "pysess")
        assert conn.read_response() == "OK"
        got = [conn.read_response() for _ in range(3)]
        want = [offsets[0], offsets[2], offsets[3]]
        assert [g[0:3] for g in got] == [["session", "pysess", o] for o in want], got
        print("session", " ".join("%s:%s" % (g[3], g[4]) for g in got))
        conn.send_command("SESSION", "ACK", "pysess", str(offsets[3]))
        assert conn.read_response() == offsets[3]
    finally:
        r.connection_pool.release(conn)
    assert r.execute_command("SESSION", "LIST") == ["pysess"]
    print("done", "ok")


if __name__ == "__main__":
    main(int(sys.argv[1]))
