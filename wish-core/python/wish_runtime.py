"""The wish runtime for Python: frames, their bounded codec, lz4, the cache options, clients and a server.

Shipped, unchanged, inside every package that ``wish_core::build::PythonPackage``
generates; the generated ``__init__.py`` holds only the messages, the method
tables and thin per-service classes over what is here. It speaks the protocol
of wish-core's PROTOCOL.md (version 1):

    client                                            server
    XClient.multiply(req) -> Client.call              Server (asyncio)
      CacheLayer (optional, client side)               |- method table: id -> MethodDesc
      FrameCodec.encode: request frame, lz4 if         |- CacheLayer: cache, expire, timestamped
      (compress) and it pays  ===== bytes =====>  FrameReader (bounded) -> XServer.multiply(ctx, req)
    Reply(value, from_cache, computed_at)  <=====  response frame (lz4 if (compress)), or error frame

Every length read from the network is checked against ``max_frame_len``
(default 4 MiB) before anything is allocated for it, and so is the declared
size of a compressed payload (a decompression bomb is a protocol error).
Times are milliseconds since the Unix epoch, read from a ``clock`` callable.
"""

import asyncio
import collections
import enum
import math
import socket
import struct
import threading
import time

try:  # the lz4 PyPI package; without it, a pure-Python decoder, and nothing is compressed
    import lz4.block as _lz4
except ImportError:  # pragma: no cover
    _lz4 = None

VERSION = 1
DEFAULT_MAX_FRAME_LEN = 4 * 1024 * 1024
DEFAULT_COMPRESS_THRESHOLD = 512
MAX_ERROR_MESSAGE = 65535

KIND_REQUEST, KIND_RESPONSE, KIND_ERROR, KIND_CANCEL = 1, 2, 3, 4
_PEEK = 15  # bytes up to the end of a frame's id: length, version, kind, flags, id
CODEC_MASK = 0x03
CODEC_LZ4 = 0x01
FLAG_DEADLINE = 0x04
FLAG_TIMESTAMP = 0x08
FLAG_FROM_CACHE = 0x10
FLAG_NO_CACHE = 0x20
FLAG_PLAIN_RESPONSE = 0x40
_ALLOWED = {
    KIND_REQUEST: CODEC_MASK | FLAG_DEADLINE | FLAG_NO_CACHE | FLAG_PLAIN_RESPONSE,
    KIND_RESPONSE: CODEC_MASK | FLAG_TIMESTAMP | FLAG_FROM_CACHE,
    KIND_ERROR: 0,
    KIND_CANCEL: 0,
}
_COMMON = 11  # version, kind, flags, id
MAX_IN_FLIGHT = 65536  # calls in flight per client connection


class Code(enum.IntEnum):
    """Status codes, numbered as gRPC numbers them (PROTOCOL.md section 10)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code):
    """The name of a code (``"deadline exceeded"``), or ``"code N"`` for one not known."""
    try:
        return Code(code).name.lower().replace("_", " ")
    except ValueError:
        return "code %d" % code


class WishError(Exception):
    """A call that ended without a response: a status code (kept as it is when unknown) and a message."""

    def __init__(self, code, message=""):
        message = str(message)
        super().__init__(code, message)
        self.code = int(code)
        self.message = message

    def __str__(self):
        return "%s: %s" % (code_name(self.code), self.message) if self.message else code_name(self.code)


class ProtocolError(WishError):
    """The peer sent bytes that are not the protocol: the connection must be closed."""


def method_id(full_name):
    """The id of a method on the wire: 32-bit FNV-1a of ``package.Service.Method``."""
    h = 0x811C9DC5
    for b in full_name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def now_ms():
    """The wall clock, in milliseconds since the Unix epoch: the default clock."""
    return int(time.time() * 1000)


# ---------------------------------------------------------------- frames


class Request:
    """A request frame: method id, optional deadline (ms), no-cache, plain-response, payload.

    ``compress``: on encode, compress the payload if it pays; on decode, whether it came compressed.
    """

    __slots__ = ("id", "method", "payload", "deadline_ms", "no_cache", "plain_response", "compress")

    def __init__(self, id, method, payload=b"", deadline_ms=None, no_cache=False,
                 plain_response=False, compress=False):
        self.id, self.method, self.payload = id, method, bytes(payload)
        self.deadline_ms, self.no_cache, self.plain_response = deadline_ms, no_cache, plain_response
        self.compress = compress

    def __eq__(self, other):
        return type(self) is type(other) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self):
        return "Request(%s)" % ", ".join("%s=%r" % (s, getattr(self, s)) for s in self.__slots__)


class Response:
    """A response frame: computed-at (ms since the epoch) if any, from-cache, payload."""

    __slots__ = ("id", "payload", "computed_at", "from_cache", "compress")

    def __init__(self, id, payload=b"", computed_at=None, from_cache=False, compress=False):
        self.id, self.payload, self.computed_at = id, bytes(payload), computed_at
        self.from_cache, self.compress = from_cache, compress

    __eq__ = Request.__eq__

    def __repr__(self):
        return "Response(%s)" % ", ".join("%s=%r" % (s, getattr(self, s)) for s in self.__slots__)


class Error:
    """An error frame: the call with this id failed with a status."""

    __slots__ = ("id", "code", "message")

    def __init__(self, id, code, message=""):
        self.id, self.code, self.message = id, int(code), message

    __eq__ = Request.__eq__

    def __repr__(self):
        return "Error(id=%r, code=%r, message=%r)" % (self.id, self.code, self.message)


class Cancel:
    """A cancel frame: stop the call with this id; no answer follows."""

    __slots__ = ("id",)

    def __init__(self, id):
        self.id = id

    __eq__ = Request.__eq__

    def __repr__(self):
        return "Cancel(id=%r)" % self.id


def _cut_utf8(text, limit):
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


def lz4_decompress(block, size, max_size):
    """One LZ4 block that must decompress to exactly ``size`` bytes, ``size`` checked first."""
    if size > max_size:
        raise ProtocolError(Code.RESOURCE_EXHAUSTED,
                            "compressed payload declares %d bytes, over the limit of %d" % (size, max_size))
    if _lz4 is not None:
        try:
            out = _lz4.decompress(block, uncompressed_size=size) if size else None
        except Exception as e:  # lz4.block.LZ4BlockError
            raise ProtocolError(Code.INVALID_ARGUMENT, "payload does not decompress: %s" % e)
        if size == 0:
            if bytes(block) != b"\x00":
                raise ProtocolError(Code.INVALID_ARGUMENT, "payload does not decompress")
            return b""
        if len(out) != size:
            raise ProtocolError(Code.INVALID_ARGUMENT, "payload decompresses to %d bytes, not %d" % (len(out), size))
        return out
    return _lz4_decompress_py(block, size)


def _lz4_decompress_py(src, size):
    out, i = bytearray(), 0
    bad = ProtocolError(Code.INVALID_ARGUMENT, "payload does not decompress")

    def length(n):
        nonlocal i
        if n == 15:
            while True:
                b = src[i]
                i += 1
                n += b
                if b != 255:
                    return n
        return n

    try:
        while True:
            token = src[i]
            i += 1
            n = length(token >> 4)
            if i + n > len(src) or len(out) + n > size:
                raise bad
            out += src[i:i + n]
            i += n
            if i == len(src):
                break
            off = src[i] | src[i + 1] << 8
            i += 2
            m = length(token & 15) + 4
            if off == 0 or off > len(out) or len(out) + m > size:
                raise bad
            # By slices: a match may overlap what it copies (off < m), so
            # it is copied a period (off bytes) at a time.
            start = len(out) - off
            while m > 0:
                chunk = out[start:start + min(off, m)]
                out += chunk
                start += len(chunk)
                m -= len(chunk)
    except IndexError:
        raise bad
    if len(out) != size:
        raise bad
    return bytes(out)


class FrameCodec:
    """Frames to bytes and back, with a bound on every length (PROTOCOL.md sections 2 to 6)."""

    def __init__(self, max_frame_len=DEFAULT_MAX_FRAME_LEN, compress_threshold=DEFAULT_COMPRESS_THRESHOLD,
                 stats=None):
        self.max_frame_len = min(int(max_frame_len), 0xFFFFFFFF)
        self.compress_threshold = compress_threshold
        # Counts payloads that went out compressed and came in compressed
        # ("compressed_sent", "compressed_received"); a server's codecs share its stats.
        self.stats = stats if stats is not None else collections.Counter()

    # -- encode

    def encode(self, frame):
        """The bytes of a frame; ``WishError(RESOURCE_EXHAUSTED)`` if it is over the bound."""
        if isinstance(frame, Request):
            flags = (FLAG_DEADLINE if frame.deadline_ms is not None else 0) \
                | (FLAG_NO_CACHE if frame.no_cache else 0) | (FLAG_PLAIN_RESPONSE if frame.plain_response else 0)
            head = struct.pack(">I", frame.method)
            if frame.deadline_ms is not None:
                # Whole milliseconds rounded up (never shortened), from whole nanoseconds
                # as Rust's Duration has them (so 1.1 s is 1100 ms, not 1101 from its float error).
                ns = max(0, round(frame.deadline_ms * 1_000_000))
                head += struct.pack(">I", min(-(-ns // 1_000_000), 0xFFFFFFFF))
            codec, payload = self._payload(frame.compress, frame.payload)
            body = struct.pack(">BBBQ", VERSION, KIND_REQUEST, flags | codec, frame.id) + head + payload
        elif isinstance(frame, Response):
            flags = (FLAG_TIMESTAMP if frame.computed_at is not None else 0) \
                | (FLAG_FROM_CACHE if frame.from_cache else 0)
            head = struct.pack(">Q", frame.computed_at) if frame.computed_at is not None else b""
            codec, payload = self._payload(frame.compress, frame.payload)
            body = struct.pack(">BBBQ", VERSION, KIND_RESPONSE, flags | codec, frame.id) + head + payload
        elif isinstance(frame, Error):
            message = _cut_utf8(frame.message, MAX_ERROR_MESSAGE)
            body = struct.pack(">BBBQHH", VERSION, KIND_ERROR, 0, frame.id, frame.code & 0xFFFF,
                               len(message)) + message
        elif isinstance(frame, Cancel):
            body = struct.pack(">BBBQ", VERSION, KIND_CANCEL, 0, frame.id)
        else:
            raise TypeError("not a frame: %r" % (frame,))
        if len(body) > self.max_frame_len:
            raise WishError(Code.RESOURCE_EXHAUSTED,
                            "frame of %d bytes is over the limit of %d" % (len(body), self.max_frame_len))
        return struct.pack(">I", len(body)) + body

    def _payload(self, compress, payload):
        n = len(payload)
        # Never compress what the bound refuses once decompressed.
        if compress and _lz4 is not None and self.compress_threshold <= n <= self.max_frame_len:
            block = _lz4.compress(payload, store_size=False)
            if 4 + len(block) < n:
                self.stats["compressed_sent"] += 1
                return CODEC_LZ4, struct.pack(">I", n) + block
        return 0, payload

    # -- decode

    def check_length(self, header):
        """The length a 4-byte header announces, checked against the bound."""
        (length,) = struct.unpack(">I", header)
        if length > self.max_frame_len:
            raise ProtocolError(Code.RESOURCE_EXHAUSTED,
                                "frame of %d bytes is over the limit of %d" % (length, self.max_frame_len))
        if length < _COMMON:
            raise ProtocolError(Code.INVALID_ARGUMENT, "frame of %d bytes is shorter than its header" % length)
        return length

    def decode(self, data):
        """Exactly one whole frame (length field included) from ``data``."""
        data = memoryview(data)
        if len(data) < 4:
            raise ProtocolError(Code.INVALID_ARGUMENT, "truncated frame")
        length = self.check_length(data[:4])
        if len(data) != 4 + length:
            raise ProtocolError(Code.INVALID_ARGUMENT, "frame length %d, but %d bytes" % (length, len(data) - 4))
        return self.parse(data[4:])

    def parse(self, body):
        """A frame from the bytes after its length field (already checked)."""
        body = memoryview(body)
        version, kind, flags, id = struct.unpack_from(">BBBQ", body)
        if version != VERSION:
            raise ProtocolError(Code.INVALID_ARGUMENT, "unknown protocol version %d" % version)
        if kind not in _ALLOWED:
            raise ProtocolError(Code.INVALID_ARGUMENT, "unknown frame kind %d" % kind)
        if flags & ~_ALLOWED[kind]:
            raise ProtocolError(Code.INVALID_ARGUMENT, "flags %#04x not allowed on a frame of kind %d" % (flags, kind))
        codec = flags & CODEC_MASK
        if codec > CODEC_LZ4:
            raise ProtocolError(Code.INVALID_ARGUMENT, "unknown payload codec %d" % codec)
        at = _COMMON

        def take(fmt):
            nonlocal at
            n = struct.calcsize(fmt)
            if at + n > len(body):
                raise ProtocolError(Code.INVALID_ARGUMENT, "truncated frame")
            (v,) = struct.unpack_from(fmt, body, at)
            at += n
            return v

        if kind == KIND_REQUEST:
            method = take(">I")
            deadline = take(">I") if flags & FLAG_DEADLINE else None
            payload = self._unpack(body[at:], codec)
            return Request(id, method, payload, deadline, bool(flags & FLAG_NO_CACHE),
                           bool(flags & FLAG_PLAIN_RESPONSE), codec != 0)
        if kind == KIND_RESPONSE:
            computed_at = take(">Q") if flags & FLAG_TIMESTAMP else None
            payload = self._unpack(body[at:], codec)
            return Response(id, payload, computed_at, bool(flags & FLAG_FROM_CACHE), codec != 0)
        if kind == KIND_ERROR:
            code = take(">H")
            n = take(">H")
            if len(body) - at != n:
                raise ProtocolError(Code.INVALID_ARGUMENT,
                                    "truncated frame" if len(body) - at < n else "bytes after the last field")
            try:
                message = bytes(body[at:]).decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(Code.INVALID_ARGUMENT, "error message is not UTF-8")
            return Error(id, code, message)
        if len(body) != at:
            raise ProtocolError(Code.INVALID_ARGUMENT, "bytes after the last field")
        return Cancel(id)

    def _unpack(self, rest, codec):
        if codec == 0:
            return bytes(rest)
        if len(rest) < 4:
            raise ProtocolError(Code.INVALID_ARGUMENT, "truncated frame")
        (size,) = struct.unpack_from(">I", rest)
        out = lz4_decompress(bytes(rest[4:]), size, self.max_frame_len)
        self.stats["compressed_received"] += 1
        return out


# ---------------------------------------------------------------- method tables


class EntityField:
    """A request field that names an entity for ``(timestamped)``: the entity is ``name=value``."""

    __slots__ = ("name", "number", "kind", "default")

    def __init__(self, name, number, kind, default):
        self.name, self.number, self.kind, self.default = name, number, kind, default

    def __repr__(self):
        return "EntityField(%r, %d, %r, %r)" % (self.name, self.number, self.kind, self.default)


class MethodOptions:
    """The five method options of ``wish/options.proto``, as the .proto declares them."""

    __slots__ = ("cache", "expire", "compress", "timestamped", "timestamped_fields")

    def __init__(self, cache=False, expire=None, compress=False, timestamped=False, timestamped_fields=()):
        self.cache, self.expire, self.compress = cache, expire, compress
        self.timestamped, self.timestamped_fields = timestamped, tuple(timestamped_fields)

    def __repr__(self):
        return "MethodOptions(cache=%r, expire=%r, compress=%r, timestamped=%r, timestamped_fields=%r)" % (
            self.cache, self.expire, self.compress, self.timestamped, self.timestamped_fields)


class MethodDesc:
    """One method: full name, wire id, Python name, message classes, options and its request's oneofs."""

    def __init__(self, full_name, py_name, request_type, response_type, options, request_oneofs=()):
        self.full_name, self.py_name = full_name, py_name
        self.id = method_id(full_name)
        self.request_type, self.response_type = request_type, response_type
        self.options = options
        # The field numbers of each oneof of the request: two members sent make it uncacheable.
        self.request_oneofs = tuple(frozenset(o) for o in request_oneofs)

    @property
    def name(self):
        """The method's own name, ``Multiply``."""
        return self.full_name.rsplit(".", 1)[-1]

    def __repr__(self):
        return "MethodDesc(%r, %r)" % (self.full_name, self.options)


class ServiceDesc:
    """A service's methods, in declaration order."""

    def __init__(self, full_name, methods):
        self.full_name, self.methods = full_name, tuple(methods)

    def __repr__(self):
        return "ServiceDesc(%r, %r)" % (self.full_name, self.methods)


def _decode(cls, payload, what):
    """A message of class ``cls`` from bytes; the status to fail with otherwise."""
    msg = cls()
    try:
        msg.MergeFromString(payload)
    except Exception as e:  # DecodeError, and whatever else bytes from the network provoke
        return None, "%s does not decode: %s" % (what, e or type(e).__name__)
    missing = msg.FindInitializationErrors()
    if missing:
        return None, "%s: missing required field %s of %s" % (what, missing[0], cls.DESCRIPTOR.full_name)
    return msg, None


# ---------------------------------------------------------------- cache


class _Bad(Exception):
    pass


def _varint(buf, at):
    value, shift = 0, 0
    while True:
        if at >= len(buf) or shift > 63:
            raise _Bad()
        b = buf[at]
        at += 1
        if shift == 63 and b > 1:
            raise _Bad()
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7


def _fields(msg):
    """Top-level fields of an encoded message: (number, wire, start, value, end); groups are not accepted."""
    out, at = [], 0
    while at < len(msg):
        start = at
        tag, at = _varint(msg, at)
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > 0xFFFFFFFF:
            raise _Bad()
        value = at
        if wire == 0:
            _, at = _varint(msg, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            n, at = _varint(msg, at)
            value = at
            at += n
        elif wire == 5:
            at += 4
        else:
            raise _Bad()
        if at > len(msg):
            raise _Bad()
        out.append((number, wire, start, value, at))
    return out


_KIND_WIRE = {"Int32": 0, "Int64": 0, "UInt32": 0, "UInt64": 0, "SInt32": 0, "SInt64": 0, "Bool": 0,
              "Enum": 0, "Fixed64": 1, "SFixed64": 1, "Double": 1, "String": 2, "Bytes": 2,
              "Fixed32": 5, "SFixed32": 5, "Float": 5}


def _float_text(v, fmt):
    """A float as Rust's ``{}`` writes it: shortest round trip, no exponent."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if fmt == "<f":
        for p in range(1, 10):
            s = "%.*g" % (p, v)
            if struct.unpack("<f", struct.pack("<f", float(s)))[0] == v:
                v = float(s)
                break
        text = repr(float(s))
    else:
        text = repr(v)
    if "e" in text or "E" in text:
        from decimal import Decimal
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _render(msg, field, kind):
    number, wire, start, value, end = field
    if _KIND_WIRE.get(kind) != wire:
        raise _Bad()
    raw = msg[value:end]
    if wire == 0:
        v, _ = _varint(msg, value)
        if kind in ("Int32", "Enum"):
            v &= 0xFFFFFFFF
            return str(v - (1 << 32) if v >= 1 << 31 else v)
        if kind == "Int64":
            return str(v - (1 << 64) if v >= 1 << 63 else v)
        if kind == "UInt32":
            return str(v & 0xFFFFFFFF)
        if kind == "UInt64":
            return str(v)
        if kind == "SInt32":
            v &= 0xFFFFFFFF
            return str((v >> 1) ^ -(v & 1))
        if kind == "SInt64":
            return str((v >> 1) ^ -(v & 1))
        return "true" if v else "false"
    fmt = {"Fixed32": "<I", "SFixed32": "<i", "Fixed64": "<Q", "SFixed64": "<q", "Float": "<f", "Double": "<d"}.get(kind)
    if fmt:
        (v,) = struct.unpack(fmt, raw)
        return _float_text(v, fmt) if kind in ("Float", "Double") else str(v)
    if kind == "String":
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad()
    return bytes(raw).hex()


def cache_key(msg, listed=(), oneofs=()):
    """The canonical request (top-level fields in field-number order, stable) and the entities it names.

    ``None`` when the message is not well-formed, a listed field has the wrong wire type, or it sends
    two members of one of ``oneofs`` (the field numbers of each oneof: the last one sent wins, which
    the sorted form would no longer say): such a request is not cached.
    """
    try:
        fields = _fields(msg)
        for members in oneofs:
            if len({f[0] for f in fields if f[0] in members}) > 1:
                return None
        entities = []
        for want in listed:
            last = None
            for f in fields:
                if f[0] == want.number:
                    last = f
            value = want.default if last is None else _render(msg, last, want.kind)
            entities.append("%s=%s" % (want.name, value))
    except _Bad:
        return None
    ordered = all(fields[i][0] <= fields[i + 1][0] for i in range(len(fields) - 1))
    if ordered:
        return bytes(msg), entities
    fields.sort(key=lambda f: f[0])
    return b"".join(bytes(msg[f[2]:f[4]]) for f in fields), entities


class CachedResponse:
    """A cached answer: payload, computed-at (ms) and when it stops being served (ms, or None)."""

    __slots__ = ("payload", "computed_at", "expires_at")

    def __init__(self, payload, computed_at, expires_at=None):
        self.payload, self.computed_at, self.expires_at = payload, computed_at, expires_at


class LruCache:
    """A bounded least-recently-used cache in memory: entries, and bytes (key, payload, 64 each)."""

    def __init__(self, max_entries=100_000, max_bytes=64 << 20):
        self.max_entries, self.max_bytes = max(1, max_entries), max_bytes
        self._map = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._map)

    @staticmethod
    def _weight(key, value):
        return len(key[1]) + len(value.payload) + 64

    def get(self, key, now):
        """The entry for ``key``, unless it expired at ``now`` (ms)."""
        with self._lock:
            value = self._map.get(key)
            if value is None:
                return None
            if value.expires_at is not None and value.expires_at <= now:
                self._drop(key)
                return None
            self._map.move_to_end(key)
            return value

    def put(self, key, value):
        """Stores an entry, evicting the least recently used over the bounds."""
        with self._lock:
            if key in self._map:
                self._drop(key)
            weight = self._weight(key, value)
            if weight > self.max_bytes:
                return
            while self._map and (len(self._map) >= self.max_entries or self._bytes + weight > self.max_bytes):
                self._drop(next(iter(self._map)))
            self._map[key] = value
            self._bytes += weight

    def remove(self, key):
        """Forgets an entry."""
        with self._lock:
            if key in self._map:
                self._drop(key)

    def _drop(self, key):
        value = self._map.pop(key)
        self._bytes -= self._weight(key, value)


class MemoryTimestamps:
    """Last changes of entities (ms), bounded: when full, the oldest sixteenth is forgotten and a floor raised."""

    def __init__(self, max_entities=1_000_000):
        self.max = max(1, max_entities)
        self._times = {}
        self._floor = None
        self._lock = threading.Lock()

    def touch(self, entity, now):
        """Records that ``entity`` (``"a=1"``) changed at ``now`` (ms)."""
        with self._lock:
            if entity not in self._times and len(self._times) >= self.max:
                times = sorted(self._times.values())
                cutoff = times[min(max(self.max // 16, 1), len(times)) - 1]
                self._times = {e: t for e, t in self._times.items() if t > cutoff}
                self._floor = cutoff if self._floor is None else max(self._floor, cutoff)
            self._times[entity] = max(self._times.get(entity, now), now)

    def last_modified(self, entities):
        """The latest change among ``entities``, or None."""
        with self._lock:
            times = [self._times.get(e, self._floor) for e in entities]
            times = [t for t in times if t is not None]
            return max(times) if times else None


class Pending:
    """A call that missed the cache, waiting for its answer."""

    __slots__ = ("key", "started", "expire")

    def __init__(self, key, started, expire):
        self.key, self.started, self.expire = key, started, expire


class CacheLayer:
    """The cache, expire and timestamped options, as a server and a client apply them."""

    def __init__(self, cache=None, timestamps=None):
        self.cache = cache if cache is not None else LruCache()
        self.timestamps = timestamps if timestamps is not None else MemoryTimestamps()

    def probe(self, method, request, now):
        """``(hit, pending)``: a fresh CachedResponse, or the Pending to store the answer with (or neither)."""
        opts = method.options
        if not opts.cache:
            return None, None
        keyed = cache_key(request, opts.timestamped_fields if opts.timestamped else (), method.request_oneofs)
        if keyed is None:
            return None, None
        canonical, entities = keyed
        key = (method.id, canonical)
        hit = self.cache.get(key, now)
        if hit is not None:
            changed = self.timestamps.last_modified(entities) if entities else None
            if changed is None or hit.computed_at > changed:
                return hit, None
            self.cache.remove(key)
        return None, Pending(key, now, opts.expire)

    def store(self, pending, payload, computed_at=None):
        """Stores the answer of a call that missed; it counts as computed when the call started, or earlier."""
        at = pending.started if computed_at is None else min(computed_at, pending.started)
        expires = pending.started + pending.expire * 1000 if pending.expire is not None else None
        self.cache.put(pending.key, CachedResponse(payload, at, expires))


# ---------------------------------------------------------------- clients


class Reply:
    """A decoded answer: the message, whether it came from a cache, and when it was computed (ms, or None)."""

    __slots__ = ("value", "from_cache", "computed_at")

    def __init__(self, value, from_cache=False, computed_at=None):
        self.value, self.from_cache, self.computed_at = value, from_cache, computed_at

    def __repr__(self):
        return "Reply(%r, from_cache=%r, computed_at=%r)" % (self.value, self.from_cache, self.computed_at)


def _request(id, method, payload, deadline, no_cache, no_compress):
    return Request(id, method.id, payload,
                   None if deadline is None else max(0.0, deadline) * 1000.0,
                   no_cache, no_compress, method.options.compress and not no_compress)


def _reply(method, frame):
    if isinstance(frame, Error):
        raise WishError(frame.code, frame.message)
    if not isinstance(frame, Response):
        raise WishError(Code.INTERNAL, "server sent a client frame")
    value, problem = _decode(method.response_type, frame.payload, "response")
    if problem:
        raise WishError(Code.INTERNAL, problem)
    return Reply(value, frame.from_cache, frame.computed_at)


class _Base:
    def __init__(self, host, port, unix, cache, max_frame_len, compress_threshold, connect_timeout, clock):
        if unix is None and port is None:
            raise ValueError("a port, or unix=PATH")
        self.host, self.port, self.unix = host, port, unix
        self.codec = FrameCodec(max_frame_len, compress_threshold)
        self.stats = self.codec.stats  # also "requests_sent": calls that went to the server
        self.cache = cache
        self.connect_timeout = connect_timeout
        self.clock = clock or now_ms
        self._next_id = 1

    def _new_id(self, in_flight):
        while True:
            id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFFFFFFFFFFFFFFFF or 1
            if id not in in_flight:
                return id

    def _encoded(self, method, request):
        if not isinstance(request, method.request_type):
            raise TypeError("%s takes a %s" % (method.full_name, method.request_type.DESCRIPTOR.full_name))
        missing = request.FindInitializationErrors()
        if missing:
            raise WishError(Code.INVALID_ARGUMENT, "request: missing required field %s of %s"
                            % (missing[0], request.DESCRIPTOR.full_name))
        return request.SerializeToString(deterministic=True)

    def _cached(self, method, payload, no_cache):
        if self.cache is None or no_cache:
            return None, None
        hit, pending = self.cache.probe(method, payload, self.clock())
        if hit is not None:
            value, problem = _decode(method.response_type, hit.payload, "response")
            if not problem:
                return Reply(value, True, hit.computed_at), None
        return None, pending

    def _stored(self, pending, frame, reply):
        if pending is not None:
            self.cache.store(pending, frame.payload, reply.computed_at)
        return reply


class Client(_Base):
    """A blocking client over one connection, shared by the generated ``<Service>Client`` classes.

    It connects on the first call (with TCP_NODELAY), reconnects on the first call after a
    connection is lost, and never retries a call. Calls from several threads take turns.
    ``cache``: a CacheLayer to apply the cache options on the client side too (off by default).
    """

    def __init__(self, host="127.0.0.1", port=None, *, unix=None, cache=None,
                 max_frame_len=DEFAULT_MAX_FRAME_LEN, compress_threshold=DEFAULT_COMPRESS_THRESHOLD,
                 connect_timeout=10.0, clock=None):
        super().__init__(host, port, unix, cache, max_frame_len, compress_threshold, connect_timeout, clock)
        self._sock = None
        self._lock = threading.Lock()
        self._mid_frame = False  # a frame is partly read: the stream cannot be used after a stop

    def close(self):
        """Closes the connection; the next call opens another."""
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _drop(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connect(self):
        try:
            if self.unix is not None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(self.connect_timeout)
                s.connect(self.unix)
            else:
                s = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise WishError(Code.UNAVAILABLE, "connect: %s" % e)
        self._sock = s

    def call(self, method, request, *, deadline=None, no_cache=False, no_compress=False):
        """Calls ``method`` (a MethodDesc) with a message; a Reply, or WishError with the call's status.

        ``deadline``: seconds; the server is told, and the call fails locally with
        DEADLINE_EXCEEDED (sending a cancel) if no answer came by then.
        """
        payload = self._encoded(method, request)
        hit, pending = self._cached(method, payload, no_cache)
        if hit is not None:
            return hit
        # The deadline runs from here: waiting for another thread's call counts.
        until = None if deadline is None else time.monotonic() + deadline
        if not self._lock.acquire(timeout=-1 if until is None else max(until - time.monotonic(), 0)):
            raise WishError(Code.DEADLINE_EXCEEDED, "deadline exceeded waiting for the connection")
        try:
            if self._sock is not None and self._closed_by_peer():
                self._drop()
            if self._sock is None:
                self._connect()
            id = self._new_id(())
            left = None if until is None else max(until - time.monotonic(), 0)
            frame = _request(id, method, payload, left, no_cache, no_compress)
            data = self.codec.encode(frame)  # RESOURCE_EXHAUSTED before anything is sent
            self.stats["requests_sent"] += 1
            try:
                self._sock.settimeout(None if until is None else max(until - time.monotonic(), 0.001))
                self._sock.sendall(data)
            except OSError as e:  # a frame half sent leaves the stream broken
                self._drop()
                if isinstance(e, socket.timeout):
                    raise WishError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
                raise WishError(Code.UNAVAILABLE, "connection lost: %s" % e)
            except BaseException:  # interrupted mid-frame (KeyboardInterrupt): the stream is broken too
                self._drop()
                raise
            try:
                answer = self._answer(id, until)
            except WishError as e:
                if e.code == Code.DEADLINE_EXCEEDED:
                    self._abandon(id)
                else:
                    self._drop()
                raise
            except BaseException:  # interrupted: the call is abandoned, tell the server
                self._abandon(id)
                raise
        finally:
            self._lock.release()
        reply = _reply(method, answer)
        return self._stored(pending, answer, reply)

    def _closed_by_peer(self):
        """Whether the server closed the connection since the last call: the end of the stream,
        or its farewell (an error frame of id 0), behind any answers of abandoned calls. Then
        the call goes on a new connection instead of failing on this one. No call is in flight
        here (the lock is held), so every whole frame waiting is such an answer, and is dropped."""
        try:
            self._sock.setblocking(False)
            try:
                while True:
                    head = self._sock.recv(4, socket.MSG_PEEK)
                    if not head:
                        return True  # the end of the stream
                    if len(head) < 4:
                        return False  # part of a frame: the call reads the rest
                    length = self.codec.check_length(head)
                    frame = self._sock.recv(4 + length, socket.MSG_PEEK)
                    if len(frame) < 4 + length:
                        return False
                    if frame[5] == KIND_ERROR and frame[7:_PEEK] == bytes(8):
                        return True  # the server's farewell
                    self._sock.recv(4 + length)  # an abandoned call's answer: dropped
            finally:
                self._sock.setblocking(True)
        except (BlockingIOError, InterruptedError):
            return False  # nothing (more) to read: open
        except (OSError, ProtocolError):
            return True

    def _abandon(self, id):
        """Sends a cancel for call ``id``; a frame left half read breaks the stream: closed then."""
        self._send_quietly(Cancel(id))
        if self._mid_frame:
            self._drop()

    def _send_quietly(self, frame):
        try:
            if self._sock is not None:
                self._sock.settimeout(1.0)
                self._sock.sendall(self.codec.encode(frame))
        except OSError:
            self._drop()

    def _answer(self, id, until):
        while True:
            frame = self._read(until)
            if frame.id == 0 and isinstance(frame, Error):
                raise WishError(Code.UNAVAILABLE, "connection closed by the server: %s" % frame.message)
            if frame.id == id:
                return frame
            # an answer to a call cancelled or given up on: dropped

    def _read(self, until):
        self._mid_frame = False
        header = self._exact(4, until)
        try:
            length = self.codec.check_length(header)
            frame = self.codec.parse(self._exact(length, until))
        except ProtocolError as e:
            raise WishError(Code.UNAVAILABLE, "connection closed: %s" % e.message)
        self._mid_frame = False
        return frame

    def _exact(self, n, until):
        buf = bytearray()  # grows with what arrives, never to more than n
        while len(buf) < n:
            if until is not None:
                left = until - time.monotonic()
                if left <= 0:
                    raise WishError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
                self._sock.settimeout(left)
            else:
                self._sock.settimeout(None)
            try:
                chunk = self._sock.recv(min(n - len(buf), 256 * 1024))
            except socket.timeout:
                raise WishError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
            except OSError as e:
                raise WishError(Code.UNAVAILABLE, "connection lost: %s" % e)
            if not chunk:
                raise WishError(Code.UNAVAILABLE, "connection closed by the server")
            self._mid_frame = True
            buf += chunk
        return bytes(buf)


class AsyncClient(_Base):
    """An asyncio client over one connection: many calls in flight, answers in any order.

    Connects on the first call and after a loss; calls in flight on a lost connection fail
    with UNAVAILABLE. A call whose task is cancelled, or whose deadline passes, sends a
    cancel frame. At most 65,536 calls in flight; one more fails with RESOURCE_EXHAUSTED.
    """

    def __init__(self, host="127.0.0.1", port=None, *, unix=None, cache=None,
                 max_frame_len=DEFAULT_MAX_FRAME_LEN, compress_threshold=DEFAULT_COMPRESS_THRESHOLD,
                 connect_timeout=10.0, clock=None):
        super().__init__(host, port, unix, cache, max_frame_len, compress_threshold, connect_timeout, clock)
        self._conn = None  # (reader, writer, reader task)
        self._waiting = {}
        self._connecting = None
        self._drain = None  # one drain at a time (Python before 3.10 refuses concurrent ones)

    async def close(self):
        """Closes the connection; calls in flight fail with UNAVAILABLE."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[2].cancel()
            conn[1].close()
            self._fail_all("client closed")

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _connected(self):
        if self._conn is not None:
            return self._conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self):
        try:
            if self.unix is not None:
                opening = asyncio.open_unix_connection(self.unix)
            else:
                opening = asyncio.open_connection(self.host, self.port)
            reader, writer = await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise WishError(Code.UNAVAILABLE, "connect: %s" % (e or "timed out"))
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = (reader, writer, None)
        task = asyncio.ensure_future(self._read_loop(reader, writer))
        self._conn = conn = (reader, writer, task)
        return conn

    def _fail_all(self, why):
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(WishError(Code.UNAVAILABLE, why))

    async def _read_loop(self, reader, writer):
        why = "connection closed by the server"
        try:
            while True:
                header = await reader.readexactly(4)
                length = self.codec.check_length(header)
                frame = self.codec.parse(await reader.readexactly(length))
                if frame.id == 0 and isinstance(frame, Error):
                    why = "connection closed by the server: %s" % frame.message
                    break
                fut = self._waiting.pop(frame.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
        except asyncio.IncompleteReadError:
            pass
        except ProtocolError as e:
            why = "connection closed: %s" % e.message
        except OSError as e:
            why = "connection lost: %s" % e
        if self._conn is not None and self._conn[1] is writer:
            self._conn = None
        writer.close()
        self._fail_all(why)

    async def call(self, method, request, *, deadline=None, no_cache=False, no_compress=False):
        """As Client.call; cancelling the awaiting task cancels the call on the server."""
        payload = self._encoded(method, request)
        hit, pending = self._cached(method, payload, no_cache)
        if hit is not None:
            return hit
        _, writer, _ = await self._connected()
        if len(self._waiting) >= MAX_IN_FLIGHT:
            raise WishError(Code.RESOURCE_EXHAUSTED, "%d calls in flight" % MAX_IN_FLIGHT)
        id = self._new_id(self._waiting)
        data = self.codec.encode(_request(id, method, payload, deadline, no_cache, no_compress))
        self.stats["requests_sent"] += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[id] = fut
        if self._drain is None:
            self._drain = asyncio.Lock()

        async def sent_and_answered():
            writer.write(data)
            async with self._drain:  # the write buffer is bounded: wait while the socket is full
                await writer.drain()
            return await fut

        try:
            if deadline is None:
                answer = await sent_and_answered()
            else:
                answer = await asyncio.wait_for(sent_and_answered(), max(0.0, deadline))
        except asyncio.TimeoutError:
            self._abandon(id, writer)
            raise WishError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
        except asyncio.CancelledError:
            self._abandon(id, writer)
            raise
        except (ConnectionError, OSError) as e:
            self._waiting.pop(id, None)
            raise WishError(Code.UNAVAILABLE, "connection lost: %s" % e)
        reply = _reply(method, answer)
        return self._stored(pending, answer, reply)

    def _abandon(self, id, writer):
        if self._waiting.pop(id, None) is not None and not writer.is_closing():
            writer.write(self.codec.encode(Cancel(id)))


# ---------------------------------------------------------------- server


class CallContext:
    """What a handler knows about its call: the method, when it started (ms), its deadline (ms or None)."""

    def __init__(self, method, started, deadline_ms, timestamps, clock=now_ms):
        self.method, self.started, self.deadline_ms = method, started, deadline_ms
        self._timestamps, self._clock = timestamps, clock

    def touch(self, entity, now=None):
        """Records that ``entity`` (``"a=1"``) changed (at ``now`` ms, by default the server's clock):
        cached answers of timestamped methods naming it, computed before, stop being served."""
        self._timestamps.touch(entity, self._clock() if now is None else now)


class Service:
    """Base of the generated ``<Service>Server`` classes: subclass one, and implement its async methods."""

    DESC = None


class Server:
    """An asyncio wish server of one or more services, applying the method options around each call.

    ``cache``/``compress`` switch the options off server-wide; ``max_in_flight`` calls per
    connection run at once (then the connection is not read); a frame must be whole
    ``read_timeout`` seconds after its first byte; a connection with no call in flight is
    closed after ``idle_timeout`` seconds without a frame (``None``: never). The frames
    being read, all connections together, may announce at most ``max_partial_bytes``: a
    frame over it, unless within ``partial_allowance``, closes its connection with
    RESOURCE_EXHAUSTED (the Rust server counts the bytes arrived, this one the lengths
    announced: a bound as tight or tighter).
    """

    def __init__(self, *services, cache=True, compress=True, cache_layer=None,
                 max_frame_len=DEFAULT_MAX_FRAME_LEN, compress_threshold=DEFAULT_COMPRESS_THRESHOLD,
                 max_in_flight=1024, read_timeout=30.0, idle_timeout=None,
                 max_partial_bytes=64 * 1024 * 1024, partial_allowance=64 * 1024, clock=None):
        self.cache, self.compress = cache, compress
        self.layer = cache_layer if cache_layer is not None else CacheLayer()
        self.max_frame_len, self.compress_threshold = max_frame_len, compress_threshold
        self.max_in_flight, self.read_timeout = max(1, max_in_flight), read_timeout
        self.idle_timeout = idle_timeout
        self.max_partial_bytes, self.partial_allowance = max_partial_bytes, partial_allowance
        self.partial_bytes = 0  # announced by the frames being read now
        self.clock = clock or now_ms
        self.routes = {}
        self.stats = collections.Counter()
        self._servers = []
        self._connections = set()
        self._stopping = False
        for service in services:
            self.add(service)

    def add(self, service):
        """Serves one more service (an instance of a generated ``<Service>Server`` subclass)."""
        desc = service.DESC
        for m in desc.methods:
            if m.id in self.routes:
                raise ValueError("%s and %s have the same method id %#010x"
                                 % (self.routes[m.id][1].full_name, m.full_name, m.id))
            self.routes[m.id] = (service, m)

    async def start(self, host="127.0.0.1", port=0, *, unix=None):
        """Listens; the address (``(host, port)``, or the unix path)."""
        if unix is not None:
            server = await asyncio.start_unix_server(self._connection, unix)
            self._servers.append(server)
            return unix
        server = await asyncio.start_server(self._connection, host, port)
        self._servers.append(server)
        return server.sockets[0].getsockname()[:2]

    async def stop(self, drain_timeout=5.0):
        """Stops accepting and reading, lets the calls in flight finish and their answers go
        (up to ``drain_timeout`` s), then cancels the handlers still running and closes."""
        self._stopping = True
        for s in self._servers:
            s.close()
        for conn in list(self._connections):
            conn.stop_reading()
        if self._connections:
            await asyncio.wait([c.task for c in self._connections], timeout=drain_timeout)
        left = [c.task for c in self._connections]
        for conn in list(self._connections):
            conn.abort()
        if left:
            await asyncio.wait(left, timeout=1.0)
        for s in self._servers:
            await s.wait_closed()

    async def _connection(self, reader, writer):
        conn = _Connection(self, reader, writer, asyncio.current_task())
        if self._stopping:
            conn.reading = False  # came in as the server stopped: closed at once
        self._connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            if not conn.aborted:
                raise
            # Cancelled by stop(): the connection ends as any other.
        finally:
            self._connections.discard(conn)

    async def handle(self, req, now):
        """The frame that answers request ``req`` started at ``now`` (ms): from the cache, or the handler's."""
        route = self.routes.get(req.method)
        if route is None:
            self.stats["errors"] += 1
            return Error(req.id, Code.NOT_FOUND, "no method with id %#010x" % req.method)
        service, method = route
        msg, problem = _decode(method.request_type, req.payload, "request")
        if problem:
            self.stats["errors"] += 1
            return Error(req.id, Code.INVALID_ARGUMENT, problem)
        compress = self.compress and method.options.compress and not req.plain_response
        hit, pending = (None, None)
        if self.cache and not req.no_cache:
            hit, pending = self.layer.probe(method, req.payload, now)
        if hit is not None:
            self.stats["cache_hits"] += 1
            return Response(req.id, hit.payload, hit.computed_at, True, compress)
        if pending is not None:
            self.stats["cache_misses"] += 1
        ctx = CallContext(method, now, req.deadline_ms, self.layer.timestamps, self.clock)
        self.stats["handled"] += 1
        try:
            answer = await getattr(service, method.py_name)(ctx, msg)
            if not isinstance(answer, method.response_type):
                raise TypeError("%s returned %r, not a %s" % (method.full_name, type(answer).__name__,
                                                              method.response_type.DESCRIPTOR.full_name))
            payload = answer.SerializeToString(deterministic=True)
        except WishError as e:
            self.stats["errors"] += 1
            return Error(req.id, e.code, e.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.stats["errors"] += 1
            return Error(req.id, Code.INTERNAL, "handler raised %s: %s" % (type(e).__name__, e))
        if pending is not None:
            self.layer.store(pending, payload)
        return Response(req.id, payload, now if method.options.cache else None, False, compress)


def _limit(error):
    """Marks a ProtocolError as a limit's close (counted by its own counter)."""
    error.limit = True
    return error


class _Connection:
    """One served connection: reads frames (bounded, timed), runs calls, writes answers."""

    def __init__(self, server, reader, writer, task):
        self.server, self.reader, self.writer, self.task = server, reader, writer, task
        self.codec = FrameCodec(server.max_frame_len, server.compress_threshold, server.stats)
        self.calls = {}  # id -> task
        self.writing = 0  # answers written and not yet drained: they count as in flight
        self.room = asyncio.Event()
        self.room.set()
        self.reading = True
        self.idle = False  # waiting between frames (for room, or a first byte): stop may interrupt
        self.stopped = False  # the task was cancelled by stop_reading, not by anything else
        self.aborted = False  # the task was cancelled by abort
        self.held = 0  # bytes the frame being read announced, charged to the server's budget
        self.quiet_since = time.monotonic()  # since when nothing is in flight (idle timeout)
        self.drained = asyncio.Event()  # set when the last answer being written has drained
        self.drain = asyncio.Lock()  # one drain at a time (Python before 3.10 refuses concurrent ones)

    def stop_reading(self):
        """Reads no more frames: at once between frames, else after the one being read."""
        self.reading = False
        if self.idle and not self.stopped:
            self.stopped = True
            self.task.cancel()

    def abort(self):
        """Cancels the calls still running, drops what is unsent and the connection (the
        drain timed out)."""
        self.aborted = True
        self._cancel_calls()
        self.writer.transport.abort()
        self.task.cancel()

    def _cancel_calls(self):
        """Cancels every call in flight; taken out first, so none is answered."""
        calls, self.calls = list(self.calls.values()), {}
        for call in calls:
            call.cancel()

    async def run(self):
        try:
            await self._read_frames()
        except ProtocolError as e:
            if not getattr(e, "limit", False):  # the limits count their own closes
                self.server.stats["closed_protocol"] += 1
            await self._goodbye(Error(0, e.code, e.message))
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:  # a bug here still closes the connection, and says why
            self.server.stats["closed_protocol"] += 1
            await self._goodbye(Error(0, Code.INTERNAL, "server error: %s" % type(e).__name__))
            return
        # End of stream, a half-close or a stop: answer every call in flight, then close.
        try:
            while self.calls or self.writing:
                if self.calls:
                    await asyncio.wait(list(self.calls.values()))
                else:  # answers still draining
                    self.drained.clear()
                    await self.drained.wait()
        except asyncio.CancelledError:
            self._cancel_calls()
            raise
        await self._close()

    async def _read_frames(self):
        limit = self.server.read_timeout
        while self.reading:
            self.idle = True
            try:
                await self.room.wait()
                first = await self._first_byte()
            except asyncio.CancelledError:
                if not self.stopped:
                    raise
                uncancel = getattr(self.task, "uncancel", None)  # Python 3.11 on
                if uncancel is not None and uncancel() > 0:
                    raise  # cancelled by someone else too (before 3.11 this cannot be told)
                return
            finally:
                self.idle = False
            if not first or not self.reading:
                return  # a byte read as the stop came is dropped with the rest
            started = time.monotonic()
            try:
                rest = self.reader.readexactly(3)
                header = first + (await asyncio.wait_for(rest, limit) if limit else await rest)
                length = self.codec.check_length(header)
                self._charge(length)
                body = self.reader.readexactly(length)
                left = None if not limit else limit - (time.monotonic() - started)
                body = await (asyncio.wait_for(body, max(left, 0.001)) if left is not None else body)
            except asyncio.TimeoutError:
                self.server.stats["closed_read_timeout"] += 1
                raise _limit(ProtocolError(Code.DEADLINE_EXCEEDED,
                                           "frame not whole %gs after its first byte" % limit))
            finally:
                self._charge(0)
            frame = self.codec.parse(body)
            self.quiet_since = time.monotonic()
            self._on_frame(frame)

    def _on_frame(self, frame):
        if isinstance(frame, Cancel):
            call = self.calls.pop(frame.id, None)
            if call is not None:
                call.cancel()
                self.server.stats["cancelled"] += 1
                self._room()
            return
        if not isinstance(frame, Request):
            raise ProtocolError(Code.INVALID_ARGUMENT, "a frame of a kind only the other side sends")
        if frame.id == 0:
            raise ProtocolError(Code.INVALID_ARGUMENT, "request id 0 is reserved")
        if frame.id in self.calls:
            raise ProtocolError(Code.INVALID_ARGUMENT, "request id %d is already in flight" % frame.id)
        task = asyncio.ensure_future(self._call(frame))
        self.calls[frame.id] = task
        self._room()

    async def _first_byte(self):
        """The first byte of the next frame; with an idle timeout, the connection is closed
        once it has had no call in flight and no answer to write for that long."""
        idle = self.server.idle_timeout
        if idle is None:
            return await self.reader.read(1)  # between frames: no timer
        while True:
            busy = self.calls or self.writing
            left = idle if busy else idle - (time.monotonic() - self.quiet_since)
            if left <= 0:
                self.server.stats["closed_idle"] += 1
                raise _limit(ProtocolError(Code.UNAVAILABLE, "idle for %gs" % idle))
            try:
                return await asyncio.wait_for(self.reader.read(1), left)
            except asyncio.TimeoutError:
                continue  # busy since, or idle long enough: looked at again

    def _charge(self, length):
        """The frame being read announces ``length`` bytes (0: none is being read)."""
        server = self.server
        server.partial_bytes += length - self.held
        self.held = length
        if length > server.partial_allowance and server.partial_bytes > server.max_partial_bytes:
            server.partial_bytes -= length
            self.held = 0
            server.stats["closed_over_budget"] += 1
            raise _limit(ProtocolError(Code.RESOURCE_EXHAUSTED,
                                       "partial frames over the server's budget of %d bytes"
                                       % server.max_partial_bytes))

    def _room(self):
        if not self.calls and not self.writing:
            self.quiet_since = time.monotonic()
        if len(self.calls) + self.writing >= self.server.max_in_flight:
            self.room.clear()
        else:
            self.room.set()

    async def _call(self, req):
        me = asyncio.current_task()
        now = self.server.clock()
        call = self.server.handle(req, now)
        try:
            if req.deadline_ms is not None:
                answer = await asyncio.wait_for(call, req.deadline_ms / 1000.0)
            else:
                answer = await call
        except asyncio.TimeoutError:
            self.server.stats["cancelled"] += 1
            answer = Error(req.id, Code.DEADLINE_EXCEEDED, "deadline exceeded")
        except asyncio.CancelledError:
            if self.calls.get(req.id) is not me:
                raise  # cancelled by the client or the connection's end: no answer
            # The handler's own: it awaited something cancelled elsewhere.
            answer = Error(req.id, Code.INTERNAL, "the handler was cancelled")
        except Exception as e:  # a bug here must not leave the call unanswered
            answer = Error(req.id, Code.INTERNAL, "server error: %s" % type(e).__name__)
        if self.calls.get(req.id) is not me:
            return  # cancelled after it finished: no answer
        del self.calls[req.id]
        # Until its answer has drained the call still counts: a client that does not read
        # stops being read, rather than growing the write buffer.
        self.writing += 1
        try:
            await self._write(req, answer)
        finally:
            self.writing -= 1
            if not self.writing:
                self.drained.set()
            self._room()

    async def _write(self, req, answer):
        try:
            data = self.codec.encode(answer)
        except WishError as e:
            data = self.codec.encode(Error(req.id, e.code, e.message))
        except Exception as e:  # the answer cannot be encoded: still an answer
            data = self.codec.encode(Error(req.id, Code.INTERNAL, "encoding the answer: %s" % type(e).__name__))
        try:
            self.writer.write(data)
            async with self.drain:
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass

    async def _goodbye(self, frame):
        for call in self.calls.values():
            call.cancel()
        self.calls.clear()
        try:
            self.writer.write(self.codec.encode(frame))
            await asyncio.wait_for(self.writer.drain(), 1.0)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        await self._close()

    async def _close(self):
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
