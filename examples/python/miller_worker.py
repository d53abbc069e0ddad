#!/usr/bin/env python3
"""A miller worker in Python: runs one handler on jobs the Rust master put.

Run it: python3 examples/python/miller_worker.py --port 11300 --tube zhihu \
            --handler send_invitation_mail --output /tmp/py-demo.log [--once]

It reads the job envelope documented in miller-core (dispatch::Envelope):
a JSON object with v=1, event, app, handler, data (UTF-8 text) or data_b64
(base64, for bytes that are not UTF-8), attempt, first_seen, optional ttr
and last_error. For each job of its handler it appends
"<event> <data>" to the output file and deletes the job. The master puts
the jobs of every handler of an app into the app's one tube, so a job of
another handler is not ours to judge: it is released (ready again after
1 s) for the worker that runs that handler. Only a body that is not an
envelope, or a run of our handler that fails, is buried. An envelope with
last_error is a bury copy: it runs only when stats-job says it was kicked
(kicks > 0); otherwise its worker stopped while burying it and it is
buried again, not run (miller-core's rule, see its Envelope doc).
With --once it exits 0 after the first job it ran. Needs greenstalk.
"""

import argparse
import base64
import json
import sys

import greenstalk


def envelope_data(env):
    """The event's data as published, as bytes."""
    if "data" in env:
        return env["data"].encode("utf-8")
    return base64.b64decode(env["data_b64"], validate=True)


def run_handler(output, env, data):
    with open(output, "ab") as f:
        f.write(env["event"].encode("utf-8") + b" " + data + b"\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11300)
    p.add_argument("--tube", required=True)
    p.add_argument("--handler", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--once", action="store_true")
    args = p.parse_args()

    client = greenstalk.Client((args.host, args.port), use=args.tube, watch=args.tube, encoding=None)
    print("miller_worker.py running: tube %s" % args.tube, file=sys.stderr, flush=True)
    while True:
        job = client.reserve()
        try:
            env = json.loads(job.body.decode("utf-8"))
            if not isinstance(env, dict) or env.get("v") != 1:
                raise ValueError("not a job envelope")
        except Exception as e:  # not an envelope: buried, the worker lives
            print("burying job %d: %s" % (job.id, e), file=sys.stderr, flush=True)
            client.bury(job)
            continue
        if env.get("handler") != args.handler:
            # Another handler's job in the app's tube: back for its worker.
            client.release(job, priority=client.stats_job(job)["pri"], delay=1)
            continue
        if env.get("last_error") is not None and client.stats_job(job)["kicks"] == 0:
            print("burying job %d again: a bury copy never kicked" % job.id, file=sys.stderr, flush=True)
            client.bury(job)
            continue
        try:
            data = envelope_data(env)
            run_handler(args.output, env, data)
        except Exception as e:  # a failed job is buried, the worker lives
            print("burying job %d: %s" % (job.id, e), file=sys.stderr, flush=True)
            client.bury(job)
            continue
        client.delete(job)
        if args.once:
            return 0


if __name__ == "__main__":
    sys.exit(main())
