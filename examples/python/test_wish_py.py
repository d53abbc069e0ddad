#!/usr/bin/env python3
"""Tests of the Python package wish-py generates from calc.proto, against real servers.

Run by examples/tests/examples/wish_py.rs, which generates the package, puts
it on PYTHONPATH and starts the servers; by hand:
    PYTHONPATH=/tmp/calc-py WISH_PROTOCOL_MD=wish-core/PROTOCOL.md \
        python3 examples/python/test_wish_py.py Golden PythonServer
    WISH_CALC_PORT=7300 ... python3 examples/python/test_wish_py.py RustCalcServer
Test classes:
  Golden          the golden frames of PROTOCOL.md, decoded and re-encoded (WISH_PROTOCOL_MD)
  PythonServer    the Python server and clients in one process: options, bounds, protocol errors
  RustCalcServer  the blocking and asyncio clients against calc-server at WISH_HOST:WISH_CALC_PORT
  RustShaped      against the Rust test server at WISH_HOST:WISH_SHAPED_PORT (Multiply answers
                  padded so that they are compressed; Divide never answers)
Needs protobuf and lz4 from PyPI; the package's import name is WISH_PACKAGE (default calc_wish).
"""

import asyncio
import importlib
import os
import random
import re
import socket
import struct
import time
import unittest

calc = importlib.import_module(os.environ.get("WISH_PACKAGE", "calc_wish"))
rt = calc.wish_runtime
Code = calc.Code
HOST = os.environ.get("WISH_HOST", "127.0.0.1")
PAD = b"\x7a\xd8\x04" + b"x" * 600  # field 15, 600 bytes: not in CalcRequest/CalcResponse


def req(a, b, pad=False):
    r = calc.CalcRequest(a=a, b=b)
    if pad:
        r.MergeFromString(PAD)
    return r


def golden_frames(path):
    """The hex of each golden example of PROTOCOL.md section 12: {letter: bytes}."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## 12. Golden examples", 1)[1].split("\n## ", 1)[0]
    out = {}
    for m in re.finditer(r"\*\*\((\w)\).*?```\n([0-9a-f ]+)\n```", section, re.S):
        out[m.group(1)] = bytes.fromhex(m.group(2))
    return out


class Raw:
    """A bare socket speaking frames: for what the clients never send."""

    def __init__(self, port, host=HOST):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.codec = rt.FrameCodec()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else self.codec.encode(data))

    def frame(self):
        """The next frame, or None at end of stream."""
        head = self._exact(4)
        if head is None:
            return None
        length = self.codec.check_length(head)
        return self.codec.parse(self._exact(length))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def close(self):
        self.sock.close()


def method(service, name):
    return next(m for m in service.methods if m.name == name)


MULTIPLY = method(calc.ADVANCED_SERVICE, "Multiply")
DIVIDE = method(calc.ADVANCED_SERVICE, "Divide")
PLUS = method(calc.SIMPLE_SERVICE, "Plus")


class Golden(unittest.TestCase):
    """PROTOCOL.md section 12, decoded and encoded again byte for byte."""

    @classmethod
    def setUpClass(cls):
        cls.frames = golden_frames(os.environ["WISH_PROTOCOL_MD"])

    def test_all_seven_are_there(self):
        self.assertEqual(sorted(self.frames), list("abcdefg"))

    def test_decoded_as_documented(self):
        codec, f = rt.FrameCodec(), self.frames
        self.assertEqual(codec.decode(f["a"]), rt.Request(1, rt.method_id("calc.Simple.Plus"), b"\x08\x01\x10\x02"))
        self.assertEqual(calc.CalcRequest.FromString(codec.decode(f["a"]).payload), req(1, 2))
        self.assertEqual(codec.decode(f["b"]), rt.Response(1, b"\x08\x03"))
        self.assertEqual(codec.decode(f["c"]), rt.Error(1, Code.INVALID_ARGUMENT, "division by zero"))
        self.assertEqual(codec.decode(f["d"]), rt.Cancel(1))
        self.assertEqual(codec.decode(f["e"]), rt.Request(2, 0xF7733F92, b"\x08\x01\x10\x02", 250, no_cache=True))
        self.assertEqual(codec.decode(f["f"]), rt.Response(2, b"\x08\x03", 1700000000123, from_cache=True))
        g = codec.decode(f["g"])
        self.assertEqual(g, rt.Response(3, b"\x0a\xd8\x04" + b"x" * 600, compress=True))

    def test_reencoded_byte_for_byte(self):
        codec = rt.FrameCodec()
        for letter in "abcdef":
            self.assertEqual(codec.encode(codec.decode(self.frames[letter])), self.frames[letter], letter)

    def test_the_compressed_example(self):
        # Another LZ4 compressor may write another block (PROTOCOL.md 12 (g)): the
        # header and size are the same, the block decompresses to the same payload.
        codec = rt.FrameCodec()
        g = self.frames["g"]
        again = codec.encode(codec.decode(g))
        self.assertEqual(again[4:19], g[4:19])
        self.assertEqual(codec.decode(again), codec.decode(g))
        self.assertLess(len(again), 40)
        print("GOLDEN-G-REENCODED %s" % again.hex(), flush=True)
        # The pure-Python decoder (used without the lz4 package) reads it too.
        self.assertEqual(rt._lz4_decompress_py(g[19:], 603), b"\x0a\xd8\x04" + b"x" * 600)

    def test_every_golden_frame_split_nowhere_is_refused_short(self):
        codec = rt.FrameCodec()
        for letter, frame in self.frames.items():
            for cut in range(len(frame)):
                with self.assertRaises(rt.ProtocolError, msg="%s cut at %d" % (letter, cut)):
                    codec.decode(frame[:cut])

    def test_method_ids(self):
        for name, want in [("", 0x811C9DC5), ("a", 0xE40C292C), ("foobar", 0xBF9CF968),
                           ("calc.Simple.Plus", 0xF7733F92), ("calc.Simple.Minus", 0x08A6634A),
                           ("calc.Advanced.Multiply", 0xE54676FE), ("calc.Advanced.Divide", 0x6A68B473)]:
            self.assertEqual(rt.method_id(name), want, name)
        self.assertEqual(MULTIPLY.id, 0xE54676FE)

    def test_bounds_and_bad_frames(self):
        codec = rt.FrameCodec(max_frame_len=1024)
        bad = {
            "over the bound": struct.pack(">I", 1025),
            "under the header": struct.pack(">I", 10),
        }
        for what, head in bad.items():
            with self.assertRaises(rt.ProtocolError, msg=what):
                codec.check_length(head)
        g = bytearray(self.frames["g"])
        bomb = bytes(g[:15]) + struct.pack(">I", 5 * 1024 * 1024) + bytes(g[19:])
        with self.assertRaises(rt.ProtocolError) as e:
            rt.FrameCodec().decode(bomb)
        self.assertEqual(e.exception.code, Code.RESOURCE_EXHAUSTED)
        cases = {
            "version 2": b"\x00\x00\x00\x0b\x02\x04" + bytes(9),
            "kind 7": b"\x00\x00\x00\x0b\x01\x07" + bytes(9),
            "reserved flag": b"\x00\x00\x00\x0b\x01\x04\x80" + bytes(8),
            "codec 2": b"\x00\x00\x00\x0f\x01\x01\x02" + bytes(12),
            "cancel with a byte more": b"\x00\x00\x00\x0c\x01\x04\x00" + bytes(9),
            "error message not UTF-8": b"\x00\x00\x00\x10\x01\x03\x00" + bytes(8) + b"\x00\x03\x00\x01\xff",
            "error message short": b"\x00\x00\x00\x0f\x01\x03\x00" + bytes(8) + b"\x00\x03\x00\x01",
            "damaged block": bytes(g[:19]) + b"\xff" * 10,
            "block that makes fewer bytes": bytes(g[:15]) + struct.pack(">I", 604) + bytes(g[19:]),
            "size 603, but more block": bytes(g) + b"\x00",
        }
        for what, frame in cases.items():
            frame = struct.pack(">I", len(frame) - 4) + frame[4:]
            with self.assertRaises(rt.ProtocolError, msg=what):
                rt.FrameCodec().decode(frame)

    def test_the_pure_python_lz4_copies_overlapping_matches(self):
        # "ab", then a match of 10 at offset 2 (it overlaps what it copies), then "c".
        block = bytes([0x26]) + b"ab" + bytes([2, 0, 0x10]) + b"c"
        want = b"ab" + b"ab" * 5 + b"c"
        self.assertEqual(rt._lz4_decompress_py(block, len(want)), want)
        # Offset 1: a run of one byte.
        run = bytes([0x1F]) + b"x" + bytes([1, 0, 200 - 15 - 4, 0x10]) + b"y"
        self.assertEqual(rt._lz4_decompress_py(run, 202), b"x" * 201 + b"y")

    def test_deadlines_are_whole_milliseconds_rounded_up(self):
        codec = rt.FrameCodec()
        for seconds, ms in [(0.25, 250), (1.1, 1100), (0.0019990, 2), (0, 0), (0.0000001, 1), (1e9, 0xFFFFFFFF)]:
            frame = codec.decode(codec.encode(rt._request(1, PLUS, b"", seconds, False, False)))
            self.assertEqual(frame.deadline_ms, ms, seconds)

    def test_encoder_refuses_over_the_bound_and_compresses_only_when_it_pays(self):
        codec = rt.FrameCodec(max_frame_len=100)
        with self.assertRaises(rt.WishError) as e:
            codec.encode(rt.Response(1, b"\x01" * 200))
        self.assertEqual(e.exception.code, Code.RESOURCE_EXHAUSTED)
        codec = rt.FrameCodec()
        marked = codec.encode(rt.Response(1, b"y" * 600, compress=True))
        self.assertEqual(marked[6] & 3, 1)
        self.assertEqual(codec.encode(rt.Response(1, b"y" * 511, compress=True))[6] & 3, 0, "under the threshold")
        noise = random.Random(7).randbytes(600)
        self.assertEqual(codec.encode(rt.Response(1, noise, compress=True))[6] & 3, 0, "does not shrink")
        long = "é" * 40000
        self.assertEqual(len(codec.decode(codec.encode(rt.Error(1, 2, long))).message.encode()), 65534)

    def test_damaged_frames_only_ever_raise_protocol_errors(self):
        rng = random.Random(11)
        codec = rt.FrameCodec(max_frame_len=4096)
        frames = list(self.frames.values())
        for _ in range(20000):
            frame = bytearray(rng.choice(frames))
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(4, len(frame))
                frame[at] = rng.randrange(256)
            if rng.random() < 0.3:
                frame = frame[:rng.randrange(4, len(frame) + 1)]
                frame[:4] = struct.pack(">I", len(frame) - 4)
            try:
                codec.decode(bytes(frame))
            except rt.ProtocolError:
                pass
        for _ in range(5000):
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
            # Junk never raises; a key it gives is canonical: keying its own bytes gives it back.
            key = rt.cache_key(junk, MULTIPLY.options.timestamped_fields)
            if key is not None:
                self.assertEqual(rt.cache_key(key[0], MULTIPLY.options.timestamped_fields), key)
            try:
                rt._lz4_decompress_py(junk, rng.randrange(0, 64))
            except rt.ProtocolError:
                pass
            try:
                rt.lz4_decompress(junk, rng.randrange(0, 64), 4096)
            except rt.ProtocolError:
                pass

    def test_cache_keys_are_canonical(self):
        ab = bytes.fromhex("08011002")
        self.assertEqual(rt.cache_key(ab, MULTIPLY.options.timestamped_fields), (ab, ["a=1", "b=2"]))
        self.assertEqual(rt.cache_key(bytes.fromhex("10020801"), MULTIPLY.options.timestamped_fields),
                         (ab, ["a=1", "b=2"]))
        self.assertEqual(rt.cache_key(bytes.fromhex("08ffffffffffffffffff01"), MULTIPLY.options.timestamped_fields),
                         (bytes.fromhex("08ffffffffffffffffff01"), ["a=-1", "b=0"]))
        self.assertIsNone(rt.cache_key(b"\x08"))
        self.assertIsNone(rt.cache_key(b"\x0b\x0c"), "groups are not keyed")
        # Two members of one oneof: the last one sent wins, so no key (a=1 b=2 and b=2 a=1
        # would share one); one member, even sent twice, is keyed.
        oneof = [frozenset((1, 2))]
        self.assertIsNone(rt.cache_key(ab, (), oneof))
        self.assertIsNone(rt.cache_key(bytes.fromhex("10020801"), (), oneof))
        twice = bytes.fromhex("08010803")
        self.assertEqual(rt.cache_key(twice, (), oneof), (twice, []))
        desc = rt.MethodDesc(MULTIPLY.full_name, "multiply", None, None, MULTIPLY.options, request_oneofs=[(1, 2)])
        self.assertEqual(rt.CacheLayer().probe(desc, ab, 0), (None, None))
        self.assertIsNotNone(rt.CacheLayer().probe(MULTIPLY, ab, 0)[1], "keyed without the oneof")


async def until(condition, what, limit=60.0):
    """Polls ``condition`` until it holds; fails after ``limit`` seconds rather than hang."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not condition():
        if loop.time() > end:
            raise AssertionError("waited %gs for %s" % (limit, what))
        await asyncio.sleep(0.01)


def calc_services(calls, gate=None):
    class Simple(calc.SimpleServer):
        async def plus(self, ctx, r):
            calls.append("plus")
            return calc.CalcResponse(c=r.a + r.b)

    class Advanced(calc.AdvancedServer):
        async def multiply(self, ctx, r):
            calls.append("multiply")
            if r.a == 99:
                ctx.touch("a=99")
            answer = calc.CalcResponse(c=r.a * r.b)
            if r.b == 1000:
                answer.MergeFromString(PAD)
            return answer

        async def divide(self, ctx, r):
            calls.append("divide")
            if gate is not None:
                try:
                    await gate.wait()
                except asyncio.CancelledError:
                    calls.append("divide cancelled")
                    raise
            if r.b == 21:  # a big answer: 64 KiB in a field CalcResponse does not know
                answer = calc.CalcResponse(c=r.a // r.b)
                answer.MergeFromString(b"\x7a\x80\x80\x04" + b"x" * 65536)
                return answer
            if r.b == 0:
                raise calc.WishError(Code.INVALID_ARGUMENT, "division by zero")
            if r.b == 7:
                raise RuntimeError("boom")
            if r.b == 13:  # awaits something cancelled elsewhere
                cancelled = asyncio.get_running_loop().create_future()
                cancelled.cancel()
                await cancelled
            if r.b == 17:  # a status whose message is not text
                raise calc.WishError(Code.INVALID_ARGUMENT, ValueError("not text"))
            return calc.CalcResponse(c=r.a // r.b)

    return Simple(), Advanced()


class PythonServer(unittest.IsolatedAsyncioTestCase):
    """The Python server and clients of the package, in one process."""

    async def asyncSetUp(self):
        self.calls = []
        self.gate = asyncio.Event()
        self.server = calc.Server(*calc_services(self.calls, self.gate), max_frame_len=64 * 1024)
        self.host, self.port = await self.server.start("127.0.0.1", 0)
        self.client = calc.AsyncClient(self.host, self.port, max_frame_len=64 * 1024)
        self.adv = calc.AdvancedAsyncClient(self.client)

    async def asyncTearDown(self):
        self.gate.set()
        await self.client.close()
        await self.server.stop(drain_timeout=1.0)

    async def test_cache_expire_timestamped_and_bypass(self):
        first = await self.adv.multiply_with(req(3, 4))
        second = await self.adv.multiply_with(req(3, 4))
        self.assertEqual((first.value.c, first.from_cache, second.from_cache), (12, False, True))
        self.assertEqual(first.computed_at, second.computed_at)
        self.assertIsNotNone(first.computed_at)
        bypass = await self.adv.multiply_with(req(3, 4), no_cache=True)
        self.assertFalse(bypass.from_cache)
        self.assertIsNotNone(bypass.computed_at, "every answer of a (cache) method has computed-at")
        self.assertEqual(self.calls.count("multiply"), 2)
        # (timestamped): a call that touches a=99 makes its own cached answer stale.
        await self.adv.multiply(req(99, 2))
        self.assertFalse((await self.adv.multiply_with(req(99, 2))).from_cache)
        # Divide has no (cache): no computed-at, never from the cache.
        self.gate.set()
        d = await self.adv.divide_with(req(8, 2))
        self.assertEqual((d.value.c, d.from_cache, d.computed_at), (4, False, None))

    async def test_expire_on_a_simulated_clock(self):
        clock = [1_000_000]
        layer = calc.CacheLayer()
        hit, pending = layer.probe(MULTIPLY, req(1, 2).SerializeToString(), clock[0])
        self.assertIsNone(hit)
        layer.store(pending, b"\x08\x02")
        self.assertIsNotNone(layer.probe(MULTIPLY, req(1, 2).SerializeToString(), clock[0] + 3599_999)[0])
        self.assertIsNone(layer.probe(MULTIPLY, req(1, 2).SerializeToString(), clock[0] + 3600_000)[0])

    async def test_client_side_cache(self):
        client = calc.AsyncClient(self.host, self.port, cache=calc.CacheLayer())
        adv = calc.AdvancedAsyncClient(client)
        try:
            await adv.multiply(req(5, 6))
            hit = await adv.multiply_with(req(5, 6))
            self.assertTrue(hit.from_cache)
            self.assertEqual(client.stats["requests_sent"], 1, "answered by the client's cache")
            client.cache.timestamps.touch("b=6", hit.computed_at)
            self.assertEqual((await adv.multiply(req(5, 6))).c, 30)
            self.assertEqual(client.stats["requests_sent"], 2, "stale after the touch")
            await adv.multiply(req(5, 6), no_cache=True)
            self.assertEqual(client.stats["requests_sent"], 3)
        finally:
            await client.close()

    async def test_compression_both_ways(self):
        r = await self.adv.multiply_with(req(2, 1000, pad=True))
        self.assertEqual(r.value.c, 2000)
        self.assertEqual(self.server.stats["compressed_received"], 1)
        self.assertEqual(self.server.stats["compressed_sent"], 1)
        self.assertEqual(self.client.stats["compressed_received"], 1)
        await self.adv.multiply(req(3, 1000, pad=True), no_compress=True)
        self.assertEqual(self.server.stats["compressed_sent"], 1, "plain-response asked")

    async def test_statuses(self):
        self.gate.set()
        with self.assertRaises(calc.WishError) as e:
            await self.adv.divide(req(1, 0))
        self.assertEqual((e.exception.code, e.exception.message), (Code.INVALID_ARGUMENT, "division by zero"))
        with self.assertRaises(calc.WishError) as e:
            await self.adv.divide(req(1, 7))
        self.assertEqual(e.exception.code, Code.INTERNAL)
        with self.assertRaises(calc.WishError) as e:
            await calc.SimpleAsyncClient(self.client).minus(req(1, 2))
        self.assertEqual(e.exception.code, Code.UNIMPLEMENTED)
        with self.assertRaises(calc.WishError) as e:
            await self.adv.multiply(calc.CalcRequest(a=1))
        self.assertEqual(e.exception.code, Code.INVALID_ARGUMENT)
        # A handler's own CancelledError is an answer, and the connection
        # goes on (more calls than max_in_flight would otherwise wedge it).
        for _ in range(3):
            with self.assertRaises(calc.WishError) as e:
                await self.adv.divide(req(1, 13))
            self.assertEqual(e.exception.code, Code.INTERNAL)
        with self.assertRaises(calc.WishError) as e:
            await self.adv.divide(req(1, 17))
        self.assertEqual((e.exception.code, e.exception.message), (Code.INVALID_ARGUMENT, "not text"))
        self.assertEqual((await self.adv.divide(req(8, 2))).c, 4)

    async def test_deadline_and_cancel_reach_the_server(self):
        with self.assertRaises(calc.WishError) as e:
            await self.adv.divide(req(8, 2), deadline=0.05)
        self.assertEqual(e.exception.code, Code.DEADLINE_EXCEEDED)
        task = asyncio.ensure_future(self.adv.divide(req(8, 2)))
        await until(lambda: self.calls.count("divide") == 2, "the second Divide to start")
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        await until(lambda: self.server.stats["cancelled"] == 2, "the server to count two cancels")
        self.gate.set()
        self.assertEqual((await self.adv.divide(req(8, 2))).c, 4, "the connection is still good")

    async def test_raw_frames(self):
        loop = asyncio.get_running_loop()
        self.gate.set()

        def raw():
            out = {}
            r = Raw(self.port, "127.0.0.1")
            r.send(rt.Request(1, 0x12345678, b""))
            out["unknown method"] = r.frame()
            r.send(rt.Request(2, MULTIPLY.id, b"\x08\x01"))
            out["missing b"] = r.frame()
            r.send(rt.Request(3, DIVIDE.id, b"\x08\x08\x10\x02", deadline_ms=10_000))
            out["with a deadline"] = r.frame()
            r.send(rt.Cancel(77))  # not in flight: ignored
            r.send(rt.Request(0, PLUS.id, b"\x08\x01\x10\x02"))
            out["id 0"] = r.frame()
            out["closed"] = r.frame()
            r.close()
            bomb = rt.FrameCodec().encode(rt.Request(9, PLUS.id, b"z" * 1000, compress=True))
            bomb = bomb[:19] + struct.pack(">I", 64 * 1024 + 1) + bomb[23:]
            for name, data in [("too long", struct.pack(">I", 64 * 1024 + 1)), ("bomb", bomb),
                               ("a response", rt.FrameCodec().encode(rt.Response(5, b""))),
                               ("version 9", b"\x00\x00\x00\x0b\x09\x01" + bytes(9))]:
                r = Raw(self.port, "127.0.0.1")
                r.send(data)
                out[name] = (r.frame(), r.frame())
                r.close()
            return out

        out = await loop.run_in_executor(None, raw)
        self.assertEqual(out["unknown method"], rt.Error(1, Code.NOT_FOUND, "no method with id 0x12345678"))
        self.assertEqual(out["missing b"],
                         rt.Error(2, Code.INVALID_ARGUMENT, "request: missing required field b of calc.CalcRequest"))
        self.assertEqual(out["with a deadline"], rt.Response(3, b"\x08\x04"))
        self.assertEqual(out["id 0"], rt.Error(0, Code.INVALID_ARGUMENT, "request id 0 is reserved"))
        self.assertIsNone(out["closed"])
        for name in ("too long", "bomb"):
            frame, end = out[name]
            self.assertEqual((frame.id, frame.code, end), (0, Code.RESOURCE_EXHAUSTED, None), name)
        for name in ("a response", "version 9"):
            frame, end = out[name]
            self.assertEqual((frame.id, frame.code, end), (0, Code.INVALID_ARGUMENT, None), name)

    async def test_partial_io_slow_frames_and_half_close(self):
        loop = asyncio.get_running_loop()
        golden_a = bytes.fromhex("0000001301010000000000000000 01f7733f9208011002".replace(" ", ""))
        server = calc.Server(*calc_services([]), read_timeout=0.3)
        _, port = await server.start("127.0.0.1", 0)

        def raw():
            out = {}
            r = Raw(self.port, "127.0.0.1")  # read timeout 30 s
            for i in range(len(golden_a)):  # every byte in a write of its own
                r.sock.sendall(golden_a[i:i + 1])
            out["byte by byte"] = r.frame()
            r.close()
            r = Raw(port, "127.0.0.1")  # read timeout 0.3 s
            r.sock.sendall(golden_a[:9])  # a frame never finished
            out["read timeout"] = (r.frame(), r.frame())
            r.close()
            r = Raw(port, "127.0.0.1")
            r.sock.sendall(golden_a)
            r.sock.shutdown(socket.SHUT_WR)  # half-close after the last request
            out["half-close"] = (r.frame(), r.frame())
            r.close()
            return out

        try:
            out = await loop.run_in_executor(None, raw)
        finally:
            await server.stop(drain_timeout=1.0)
        self.assertEqual(out["byte by byte"], rt.Response(1, b"\x08\x03"))
        frame, end = out["read timeout"]
        self.assertEqual((frame.id, frame.code, end), (0, Code.DEADLINE_EXCEEDED, None))
        self.assertEqual(server.stats["closed_read_timeout"], 1)
        self.assertEqual(out["half-close"], (rt.Response(1, b"\x08\x03"), None))

    async def test_stop_answers_the_calls_in_flight_while_the_client_keeps_sending(self):
        calls, gate = [], asyncio.Event()
        server = calc.Server(*calc_services(calls, gate))
        _, port = await server.start("127.0.0.1", 0)
        client = calc.AsyncClient("127.0.0.1", port)
        adv, simple = calc.AdvancedAsyncClient(client), calc.SimpleAsyncClient(client)
        try:
            first = asyncio.ensure_future(adv.divide(req(8, 2)))
            await until(lambda: "divide" in calls, "the call to reach its handler")
            stopping = asyncio.ensure_future(server.stop(drain_timeout=10.0))
            await asyncio.sleep(0.05)
            # Bytes arriving during the drain are not read, and do not abort it.
            second = asyncio.ensure_future(simple.plus(req(1, 1)))
            await asyncio.sleep(0.05)
            gate.set()
            self.assertEqual((await first).c, 4)
            await stopping
            with self.assertRaises(calc.WishError) as e:
                await second
            self.assertEqual(e.exception.code, Code.UNAVAILABLE)
            self.assertNotIn("plus", calls)
        finally:
            gate.set()
            await client.close()

    async def test_stop_cancels_the_handlers_still_running_after_the_drain_timeout(self):
        calls, gate = [], asyncio.Event()
        server = calc.Server(*calc_services(calls, gate))
        _, port = await server.start("127.0.0.1", 0)
        client = calc.AsyncClient("127.0.0.1", port)
        try:
            stuck = asyncio.ensure_future(calc.AdvancedAsyncClient(client).divide(req(8, 2)))
            await until(lambda: "divide" in calls, "the call to reach its handler")
            await asyncio.wait_for(server.stop(drain_timeout=0.1), 10.0)
            self.assertIn("divide cancelled", calls)
            with self.assertRaises(calc.WishError) as e:
                await asyncio.wait_for(stuck, 10.0)
            self.assertEqual(e.exception.code, Code.UNAVAILABLE)
        finally:
            await client.close()

    async def test_a_client_that_does_not_read_is_not_read_either(self):
        server = calc.Server(*calc_services([]), max_in_flight=4)
        _, port = await server.start("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        divide = calc.ADVANCED_SERVICE.methods[1]
        frames = b"".join(rt.FrameCodec().encode(rt.Request(i, divide.id, req(84, 21).SerializeToString()))
                          for i in range(1, 401))  # 400 answers of 64 KiB: 26 MB, never read
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        try:
            await loop.sock_sendall(sock, frames[:len(frames) // 2])
            # The server answers until the socket is full, then stops: its count settles.
            last, still = -1, 0
            while still < 30:
                await asyncio.sleep(0.02)
                handled = server.stats["handled"]
                still, last = (still + 1, last) if handled == last else (0, handled)
            conn = next(iter(server._connections))
            buffered = conn.writer.transport.get_write_buffer_size()
            self.assertLess(handled, 400)
            self.assertLessEqual(buffered, 4 * 70 * 1024 + 64 * 1024,
                                 "at most max_in_flight answers wait in the write buffer")
            # Another client is served meanwhile.
            other = calc.AsyncClient("127.0.0.1", port)
            self.assertEqual((await calc.SimpleAsyncClient(other).plus(req(2, 3))).c, 5)
            await other.close()
        finally:
            sock.close()
            await server.stop(drain_timeout=1.0)

    async def test_the_blocking_client_reconnects_after_the_server_closed(self):
        loop = asyncio.get_running_loop()
        first = calc.Server(*calc_services([]))
        _, port = await first.start("127.0.0.1", 0)
        client = calc.Client("127.0.0.1", port)
        simple = calc.SimpleClient(client)
        try:
            self.assertEqual((await loop.run_in_executor(None, simple.plus, req(1, 2))).c, 3)
            await first.stop(drain_timeout=1.0)
            second = calc.Server(*calc_services([]))
            await second.start("127.0.0.1", port)
            try:
                # The first call after the close goes on a new connection.
                self.assertEqual((await loop.run_in_executor(None, simple.plus, req(2, 2))).c, 4)
            finally:
                await second.stop(drain_timeout=1.0)
        finally:
            client.close()

    async def test_idle_connections_are_closed_but_not_while_a_call_runs(self):
        loop = asyncio.get_running_loop()
        calls, gate = [], asyncio.Event()
        server = calc.Server(*calc_services(calls, gate), idle_timeout=0.2)
        _, port = await server.start("127.0.0.1", 0)
        try:
            def silent():
                r = Raw(port, "127.0.0.1")
                try:
                    return r.frame(), r.frame()
                finally:
                    r.close()

            # Silent: closed with UNAVAILABLE, then the end of the stream.
            frame, end = await loop.run_in_executor(None, silent)
            self.assertEqual((frame.id, frame.code, end), (0, Code.UNAVAILABLE, None))
            self.assertEqual(server.stats["closed_idle"], 1)
            # A call running for longer than the idle timeout keeps its connection.
            client = calc.AsyncClient("127.0.0.1", port)
            slow = asyncio.ensure_future(calc.AdvancedAsyncClient(client).divide(req(9, 3)))
            await until(lambda: "divide" in calls, "the call to reach its handler")
            await asyncio.sleep(0.5)
            gate.set()
            self.assertEqual((await slow).c, 3)
            self.assertEqual(server.stats["closed_idle"], 1)
            # Once it has nothing in flight, the idle timeout runs for it too.
            await until(lambda: server.stats["closed_idle"] == 2, "the idle connection to be closed", 10.0)
            self.assertEqual(server.stats["closed_protocol"], 0, "counted as idle only")
            await client.close()
        finally:
            gate.set()
            await server.stop(drain_timeout=1.0)

    async def test_partial_frames_share_a_server_wide_budget(self):
        loop = asyncio.get_running_loop()
        server = calc.Server(*calc_services([]), max_partial_bytes=100_000, partial_allowance=1_000)
        _, port = await server.start("127.0.0.1", 0)

        def hostile():
            a, b = Raw(port, "127.0.0.1"), Raw(port, "127.0.0.1")
            a.send(struct.pack(">I", 80_000) + b"\x01\x01")  # 80 kB announced, 2 bytes sent
            end = time.monotonic() + 30
            while server.partial_bytes < 80_000:  # charged to the budget
                assert time.monotonic() < end, "a was never charged"
                time.sleep(0.01)
            b.send(struct.pack(">I", 80_000) + b"\x01\x01")  # over the budget: refused
            refused = (b.frame(), b.frame())
            small = Raw(port, "127.0.0.1")  # within the allowance: served
            small.send(rt.Request(1, PLUS.id, req(2, 3).SerializeToString()))
            answer = small.frame()
            for r in (a, b, small):
                r.close()
            return refused, answer

        try:
            (frame, end), answer = await loop.run_in_executor(None, hostile)
        finally:
            await server.stop(drain_timeout=1.0)
        self.assertEqual((frame.id, frame.code, end), (0, Code.RESOURCE_EXHAUSTED, None))
        self.assertEqual(server.stats["closed_over_budget"], 1)
        self.assertEqual(calc.CalcResponse.FromString(answer.payload).c, 5)
        self.assertEqual(server.partial_bytes, 0, "every charge given back")

    async def test_the_blocking_client_drops_stale_answers_and_sees_the_close_behind_them(self):
        loop = asyncio.get_running_loop()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        port = listener.getsockname()[1]
        codec = rt.FrameCodec()

        def read_request(conn):
            head = conn.recv(4, socket.MSG_WAITALL)
            return codec.parse(conn.recv(codec.check_length(head), socket.MSG_WAITALL))

        def fake_server():
            # First connection: answers after the client gave up, then closes.
            conn, _ = listener.accept()
            late = read_request(conn)
            time.sleep(0.3)
            conn.sendall(codec.encode(rt.Response(late.id, calc.CalcResponse(c=1).SerializeToString())))
            conn.close()
            # Second connection: answers at once.
            conn, _ = listener.accept()
            r = read_request(conn)
            conn.sendall(codec.encode(rt.Response(r.id, calc.CalcResponse(c=42).SerializeToString())))
            conn.close()

        def client():
            with calc.Client("127.0.0.1", port) as c:
                simple = calc.SimpleClient(c)
                try:
                    simple.plus(req(1, 1), deadline=0.1)
                    first = "answered"
                except calc.WishError as e:
                    first = e.code
                time.sleep(0.6)  # the late answer and the end of the stream are waiting now
                return first, simple.plus(req(40, 2)).c

        server = loop.run_in_executor(None, fake_server)
        try:
            self.assertEqual(await loop.run_in_executor(None, client), (Code.DEADLINE_EXCEEDED, 42))
            await asyncio.wait_for(server, 10.0)
        finally:
            listener.close()

    async def test_many_calls_in_flight_answer_in_any_order(self):
        simple = calc.SimpleAsyncClient(self.client)
        got = await asyncio.gather(*(simple.plus(req(i, i)) for i in range(300)))
        self.assertEqual([r.c for r in got], [2 * i for i in range(300)])

    async def test_blocking_client(self):
        loop = asyncio.get_running_loop()

        def blocking():
            with calc.Client(self.host, self.port) as client:
                simple, adv = calc.SimpleClient(client), calc.AdvancedClient(client)
                out = [simple.plus(req(1, 2)).c, adv.multiply_with(req(7, 7)).from_cache,
                       adv.multiply_with(req(7, 7)).from_cache]
                try:
                    adv.divide(req(1, 2), deadline=0.05)
                except calc.WishError as e:
                    out.append(e.code)
                out.append(simple.plus(req(2, 2)).c)
                return out

        self.assertEqual(await loop.run_in_executor(None, blocking),
                         [3, False, True, Code.DEADLINE_EXCEEDED, 4])

    async def test_a_blocking_deadline_counts_the_wait_for_another_call(self):
        loop = asyncio.get_running_loop()
        with calc.Client(self.host, self.port) as client:
            adv = calc.AdvancedClient(client)
            # One thread's Divide holds the connection until the gate opens.
            first = loop.run_in_executor(None, lambda: adv.divide(req(8, 2)).c)
            await until(lambda: self.calls.count("divide") == 1, "the first Divide to start")

            def second():
                try:
                    adv.divide(req(1, 1), deadline=0.05)
                except calc.WishError as e:
                    return e.code

            self.assertEqual(await loop.run_in_executor(None, second), Code.DEADLINE_EXCEEDED)
            self.assertEqual(self.calls.count("divide"), 1, "the second call never reached the server")
            self.gate.set()
            self.assertEqual(await first, 4)

    async def test_unix_sockets(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "calc.sock")
            server = calc.Server(*calc_services([]))
            await server.start(unix=path)
            try:
                async with calc.AsyncClient(unix=path) as client:
                    self.assertEqual((await calc.SimpleAsyncClient(client).plus(req(2, 3))).c, 5)
                loop = asyncio.get_running_loop()

                def blocking():
                    with calc.Client(unix=path) as client:
                        return calc.AdvancedClient(client).multiply(req(2, 3)).c

                self.assertEqual(await loop.run_in_executor(None, blocking), 6)
            finally:
                await server.stop(drain_timeout=1.0)

    async def test_without_the_lz4_package(self):
        payload = bytes(range(256)) * 8
        compressed = rt.FrameCodec().encode(rt.Response(4, payload, compress=True))
        self.assertEqual(compressed[6] & 3, 1)
        saved = rt._lz4
        rt._lz4 = None  # the pure-Python decoder; nothing compressed
        try:
            codec = rt.FrameCodec()
            self.assertEqual(codec.decode(compressed), rt.Response(4, payload, compress=True))
            self.assertEqual(codec.stats["compressed_received"], 1)
            self.assertEqual(codec.encode(rt.Response(4, payload, compress=True))[6] & 3, 0)
        finally:
            rt._lz4 = saved

    async def test_connection_lost_is_unavailable(self):
        client = calc.AsyncClient("127.0.0.1", _closed_port())
        with self.assertRaises(calc.WishError) as e:
            await calc.SimpleAsyncClient(client).plus(req(1, 2))
        self.assertEqual(e.exception.code, Code.UNAVAILABLE)


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RustCalcServer(unittest.TestCase):
    """The generated clients against the Rust calc-server program."""

    @classmethod
    def setUpClass(cls):
        cls.port = int(os.environ["WISH_CALC_PORT"])

    def setUp(self):
        self.client = calc.Client(HOST, self.port)
        self.simple, self.adv = calc.SimpleClient(self.client), calc.AdvancedClient(self.client)

    def tearDown(self):
        self.client.close()

    def test_every_method(self):
        self.assertEqual(self.simple.plus(req(3, 4)).c, 7)
        self.assertEqual(self.simple.minus(req(3, 4)).c, -1)
        self.assertEqual(self.adv.multiply(req(-6, 7)).c, -42)
        self.assertEqual(self.adv.divide(req(7, -2)).c, -3)

    def test_a_cache_hit_and_its_bypass(self):
        first = self.adv.multiply_with(req(11, 13))
        second = self.adv.multiply_with(req(11, 13))
        self.assertEqual((first.value.c, first.from_cache, second.from_cache), (143, False, True))
        self.assertEqual(first.computed_at, second.computed_at)
        bypass = self.adv.multiply_with(req(11, 13), no_cache=True)
        self.assertFalse(bypass.from_cache)
        self.assertIsNotNone(bypass.computed_at)
        self.assertIsNone(self.simple.plus_with(req(1, 1)).computed_at, "Plus has (cache) = false")

    def test_a_compressed_request(self):
        r = self.adv.multiply_with(req(12, 12, pad=True), no_cache=True)
        self.assertEqual(r.value.c, 144)
        self.assertEqual(self.client.stats["compressed_sent"], 1)
        self.simple.plus(req(1, 1, pad=True))  # Plus has no (compress): sent as it is
        self.assertEqual(self.client.stats["compressed_sent"], 1)

    def test_error_statuses(self):
        with self.assertRaises(calc.WishError) as e:
            self.adv.divide(req(1, 0))
        self.assertEqual((e.exception.code, e.exception.message), (Code.INVALID_ARGUMENT, "division by zero"))
        with self.assertRaises(calc.WishError) as e:
            self.simple.plus(req(2**31 - 1, 1))
        self.assertEqual((e.exception.code, e.exception.message), (Code.INVALID_ARGUMENT, "overflows int32"))
        self.assertEqual(self.simple.plus(req(1, 2)).c, 3, "the connection stays open")
        r = Raw(self.port)
        r.send(rt.Request(1, 0xDEADBEEF, b""))
        self.assertEqual(r.frame().code, Code.NOT_FOUND)
        r.send(rt.Request(2, MULTIPLY.id, b"\x08\x01"))
        self.assertEqual(r.frame(), rt.Error(2, Code.INVALID_ARGUMENT,
                                             "request: missing required field b of calc.CalcRequest"))
        r.send(b"\x00\x00\x00\x0b\x01\x07" + bytes(9))
        bye = r.frame()
        self.assertEqual((bye.id, bye.code, bye.message), (0, Code.INVALID_ARGUMENT, "unknown frame kind 7"))
        self.assertIsNone(r.frame())
        r.close()

    def test_a_deadline(self):
        # calc-server answers at once: the deadline goes on the wire and the call is answered.
        self.assertEqual(self.adv.divide(req(9, 3), deadline=30).c, 3)
        r = Raw(self.port)
        r.send(rt.Request(5, PLUS.id, req(2, 2).SerializeToString(), deadline_ms=30_000, no_cache=True))
        self.assertEqual(r.frame(), rt.Response(5, b"\x08\x04"))
        r.close()

    def test_asyncio_client(self):
        async def run():
            async with calc.AsyncClient(HOST, self.port) as client:
                simple, adv = calc.SimpleAsyncClient(client), calc.AdvancedAsyncClient(client)
                sums = await asyncio.gather(*(simple.plus(req(i, 1)) for i in range(200)))
                product = await adv.multiply(req(4, 5))
                hit = await adv.multiply_with(req(4, 5))
                with self.assertRaises(calc.WishError) as e:
                    await adv.divide(req(4, 0))
                return [s.c for s in sums], product.c, hit.from_cache, e.exception.code

        sums, product, hit, code = asyncio.run(run())
        self.assertEqual(sums, [i + 1 for i in range(200)])
        self.assertEqual((product, hit, code), (20, True, Code.INVALID_ARGUMENT))


class RustShaped(unittest.TestCase):
    """Against the Rust test server: compressed answers; deadlines and cancels it sees."""

    @classmethod
    def setUpClass(cls):
        cls.port = int(os.environ["WISH_SHAPED_PORT"])

    def test_a_compressed_answer(self):
        with calc.Client(HOST, self.port) as client:
            r = calc.AdvancedClient(client).multiply_with(req(6, 7))
            self.assertEqual(r.value.c, 42)
            self.assertEqual(client.stats["compressed_received"], 1)
            calc.AdvancedClient(client).multiply(req(6, 8), no_compress=True)
            self.assertEqual(client.stats["compressed_received"], 1, "plain-response asked")

    def test_deadlines_and_cancels(self):
        with calc.Client(HOST, self.port) as client:
            with self.assertRaises(calc.WishError) as e:
                calc.AdvancedClient(client).divide(req(1, 1), deadline=0.05)
            self.assertEqual(e.exception.code, Code.DEADLINE_EXCEEDED)
        # The server's own deadline: a request that waits without a local timer.
        r = Raw(self.port)
        r.send(rt.Request(9, DIVIDE.id, req(1, 1).SerializeToString(), deadline_ms=50))
        self.assertEqual(r.frame(), rt.Error(9, Code.DEADLINE_EXCEEDED, "deadline exceeded"))
        r.close()

        async def cancelled():
            async with calc.AsyncClient(HOST, self.port) as client:
                task = asyncio.ensure_future(calc.AdvancedAsyncClient(client).divide(req(1, 1)))
                await asyncio.sleep(0.05)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                # The cancel frame is written before the next request, on the same connection.
                return (await calc.SimpleAsyncClient(client).plus(req(1, 1))).c

        self.assertEqual(asyncio.run(cancelled()), 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
