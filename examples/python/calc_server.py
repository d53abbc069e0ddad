#!/usr/bin/env python3
"""The seed's calc service (calc.proto: Simple and Advanced) served in Python, by the package wish-py generates.

Run it:
    cargo run -p examples --bin wish-py -- --package calc_wish --out /tmp/calc-py \
        -I examples/proto examples/proto/calc.proto
    PYTHONPATH=/tmp/calc-py python3 examples/python/calc_server.py --port 7301
then `cargo run -p examples --bin calc-client -- --port 7301 multiply 3 4`
twice: the second answer comes from this server's cache.

Options: --host H, --port P (0 picks a free port), --package NAME (the
generated package; default calc_wish), --no-cache, --no-compress (switch
the options off server-wide), --delay-ms N (every call waits N ms before
answering: to watch deadlines and cancels), --pad N (Multiply's answers
carry N more bytes, in a field CalcResponse does not declare, so that they
are long enough to be compressed). Prints "calc_server.py listening on
HOST:PORT" on stderr; at SIGTERM or Ctrl-C stops accepting, lets the calls
in flight finish, prints its counters on stderr and exits 0. Needs
protobuf and lz4 from PyPI.
"""

import argparse
import asyncio
import importlib
import signal
import sys

INT32 = (-(1 << 31), (1 << 31) - 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7301)
    p.add_argument("--package", default="calc_wish")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-compress", action="store_true")
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--pad", type=int, default=0)
    args = p.parse_args()
    calc = importlib.import_module(args.package)
    asyncio.run(serve(calc, args))


def checked(calc, c):
    if not INT32[0] <= c <= INT32[1]:
        raise calc.WishError(calc.Code.INVALID_ARGUMENT, "overflows int32")
    return calc.CalcResponse(c=c)


def services(calc, args):
    async def wait():
        if args.delay_ms:
            await asyncio.sleep(args.delay_ms / 1000)

    class Simple(calc.SimpleServer):
        async def plus(self, ctx, r):
            await wait()
            return checked(calc, r.a + r.b)

        async def minus(self, ctx, r):
            await wait()
            return checked(calc, r.a - r.b)

    class Advanced(calc.AdvancedServer):
        async def multiply(self, ctx, r):
            await wait()
            answer = checked(calc, r.a * r.b)
            if args.pad:
                # Field 15, length-delimited: unknown to CalcResponse, kept and sent.
                n = args.pad
                length = bytearray()
                while True:
                    length.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
                    n >>= 7
                    if not n:
                        break
                answer.MergeFromString(b"\x7a" + bytes(length) + b"x" * args.pad)
            return answer

        async def divide(self, ctx, r):
            await wait()
            if r.b == 0:
                raise calc.WishError(calc.Code.INVALID_ARGUMENT, "division by zero")
            q = abs(r.a) // abs(r.b)  # truncated towards zero, as in Rust
            return checked(calc, q if (r.a < 0) == (r.b < 0) else -q)

    return Simple(), Advanced()


async def serve(calc, args):
    server = calc.Server(*services(calc, args), cache=not args.no_cache, compress=not args.no_compress)
    host, port = await server.start(args.host, args.port)
    print("calc_server.py listening on %s:%d" % (host, port), file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    counters = " ".join("%s=%d" % kv for kv in sorted(server.stats.items()))
    print("calc_server.py stopped: %s" % counters, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
