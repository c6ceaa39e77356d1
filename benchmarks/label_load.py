"""Load test of the labeling server: concurrent labelers on loopback for a fixed time.

    python benchmarks/label_load.py --seconds 60 --labelers 8

Starts `python -m rlhfkit.label.server` on a fresh database of short items (K = 4) in a
subprocess, then each labeler (a thread with one keep-alive connection and a bearer
token) loops GET /api/next, POST /api/submit as fast as the server answers. Prints
requests/s, submissions/s and latency percentiles over every request, and checks that
every acknowledged submission is in the database. The client threads share the
machine with the server, so the figures are a floor for a dedicated host.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, proc: subprocess.Popen) -> None:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the server exited") from None
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def labeler(port: int, token: str, until: float, latencies: list, acked: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    auth = {"Authorization": f"Bearer {token}"}

    def call(method, path, body=None, headers=None):
        start = time.perf_counter()
        conn.request(method, path, body=body, headers={**auth, **(headers or {})})
        r = conn.getresponse()
        data = r.read()
        latencies.append(time.perf_counter() - start)
        if r.status != 200:
            errors.append((path, r.status, data[:200]))
            return None
        return json.loads(data)

    while time.time() < until:
        nxt = call("GET", "/api/next")
        if nxt is None or nxt["item"] is None:
            break
        k = len(nxt["item"]["responses"])
        body = json.dumps({"item_id": nxt["item"]["id"], "order": list(range(k))[::-1], "likert": [4] * k,
                           "flags": [[] for _ in range(k)], "seconds": 1.0}).encode()
        if call("POST", "/api/submit", body, {"X-CSRF-Token": nxt["csrf"], "Content-Type": "application/json"}):
            acked.append(nxt["item"]["id"])
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--labelers", type=int, default=8)
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--labels_per_item", type=int, default=2)
    args = parser.parse_args()

    from rlhfkit.label.export import read_labels
    from rlhfkit.label.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="label_load_"))
    db = tmp / "labels.sqlite"
    store = Store(db)
    store.add_items([{"id": str(i), "prompt": f"Instruction {i}: say something about item {i}.",
                      "responses": [f"Response {j} to item {i}, a sentence or so long." for j in range(4)]}
                     for i in range(args.items)])
    tokens = {f"labeler{n}": store.add_labeler(f"labeler{n}") for n in range(args.labelers)}
    store.close()
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rlhfkit.label.server", "--db", str(db), "--port", str(port),
                             "--labels_per_item", str(args.labels_per_item)], stderr=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        latencies: list[list[float]] = [[] for _ in tokens]
        acked: list[list[int]] = [[] for _ in tokens]
        errors: list = []
        start = time.time()
        threads = [threading.Thread(target=labeler, args=(port, tok, start + args.seconds, latencies[n], acked[n], errors))
                   for n, tok in enumerate(tokens.values())]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lat = sorted(x for per in latencies for x in per)
    stored = {(lab["labeler"], lab["item_id"]) for lab in read_labels(db)}
    sent = {(who, i) for who, ids in zip(tokens, acked) for i in ids}
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    print(f"{args.labelers} labelers, {elapsed:.1f} s on loopback ({os.cpu_count()} CPUs shared by server and clients)")
    print(f"requests: {len(lat)} ({len(lat) / elapsed:.0f}/s), submissions acknowledged: {len(sent)} "
          f"({len(sent) / elapsed:.0f}/s), errors: {len(errors)}")
    print(f"latency ms: p50 {pct(0.5):.1f}, p90 {pct(0.9):.1f}, p99 {pct(0.99):.1f}, max {lat[-1] * 1000:.1f}")
    print(f"acknowledged submissions missing from the database: {len(sent - stored)}")
    if errors:
        print("first errors:", errors[:3])


if __name__ == "__main__":
    main()
