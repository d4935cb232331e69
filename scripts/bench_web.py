"""Load benchmark of the web app on loopback: concurrent clinic systems uploading photos.

Starts ``smp serve`` (its own process, a fresh data home and SQLite records, the
classical segmenter so the background assessments do not need the model) and a
user with an API token (``smp users add`` / ``smp users token``). Then ``--clients``
threads (default 20), each a clinic system with its own client, upload ``--photos``
distinct photos each (default 5) through ``POST /api/v1/photos`` at the same time,
re-send one of them (an idempotent retry must return the same photo), and fetch each
photo and its job back. Checks afterwards, through the API: every submission is
recorded exactly once (no lost and no duplicated photo), and reports the latency
(p50 / p95 / max) of the upload and fetch endpoints. Writes ``OUT/web.json`` and the
``web`` section of BENCHMARKS.md.

Usage: python scripts/bench_web.py --out bench-out [--clients 20] [--photos 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench import update_benchmarks_md  # noqa: E402

SMP = [sys.executable, "-m", "pipeline.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo(seed: int) -> bytes:
    """A distinct 800x600 JPEG: skin-like texture with dark dots (content differs by seed)."""
    rng = np.random.default_rng(seed)
    img = np.empty((600, 800, 3), np.uint8)
    img[:] = (150, 120, 110)
    noise = rng.normal(0, 6, img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    for x, y in rng.uniform([0, 0], [800, 600], (300, 2)):
        cv2.circle(img, (int(x), int(y)), 3, (70, 60, 60), -1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--photos", type=int, default=5)
    ap.add_argument("--no-md", action="store_true")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="smp-web-bench-"))
    db = f"sqlite:///{home / 'records.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SMP_HOME": str(home)}
    run = lambda *a, **k: subprocess.run([*SMP, *a], env=env, cwd=ROOT, capture_output=True, text=True, **k)  # noqa: E731
    r = run(
        "users",
        "add",
        "loader",
        "--clinic",
        "bench",
        "--role",
        "staff",
        "--password-stdin",
        "--db",
        db,
        input="load-test-password-1\n",
    )
    if r.returncode:
        raise SystemExit(f"smp users add failed: {r.stderr.strip()}")
    r = run("users", "token", "loader", "--name", "load", "--db", db)
    if r.returncode:
        raise SystemExit(f"smp users token failed: {r.stderr.strip()}")
    token = r.stdout.strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen(
        [
            *SMP,
            "serve",
            "--port",
            str(port),
            "--db",
            db,
            "--store",
            str(home),
            "--assess-set",
            "segment.method=classical",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "serve.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for _ in range(300):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"smp serve did not start; see {home / 'serve.log'}")
        photos = {(c, k): _photo(1000 * c + k) for c in range(args.clients) for k in range(args.photos)}
        up_lat, fetch_lat, errors = [], [], []
        results: dict[tuple[int, int], dict] = {}
        resent: dict[int, dict] = {}
        lock = threading.Lock()
        start = threading.Barrier(args.clients)

        def client(c: int) -> None:
            s = requests.Session()
            s.headers.update(headers)
            start.wait()
            for k in range(args.photos):
                data = {
                    "client": f"load-{c:02d}",
                    "region": "crown",
                    "date": f"2026-0{1 + k % 9}-1{k % 9}",
                    "kind": "follow-up",
                }
                t = time.perf_counter()
                resp = s.post(
                    f"{base}/api/v1/photos",
                    data=data,
                    files={"file": (f"c{c}_{k}.jpg", photos[(c, k)], "image/jpeg")},
                    timeout=120,
                )
                dt = time.perf_counter() - t
                with lock:
                    up_lat.append(dt)
                    if resp.status_code != 201:
                        errors.append(f"client {c} photo {k}: {resp.status_code} {resp.text[:200]}")
                    else:
                        results[(c, k)] = resp.json()
            # an idempotent retry of the first photo: same photo, 200
            data = {"client": f"load-{c:02d}", "region": "crown", "date": "2026-01-10", "kind": "follow-up"}
            resp = s.post(
                f"{base}/api/v1/photos",
                data=data,
                files={"file": (f"c{c}_0.jpg", photos[(c, 0)], "image/jpeg")},
                timeout=120,
            )
            with lock:
                resent[c] = {"status": resp.status_code, **(resp.json() if resp.ok else {})}
            for k in range(args.photos):
                got = results.get((c, k))
                if not got:
                    continue
                for url in (f"{base}/api/v1/photos/{got['photo_id']}", f"{base}/api/v1/jobs/{got['job']['id']}"):
                    t = time.perf_counter()
                    resp = s.get(url, timeout=60)
                    with lock:
                        fetch_lat.append(time.perf_counter() - t)
                        if not resp.ok:
                            errors.append(f"GET {url}: {resp.status_code}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        # what the server recorded
        listed = requests.get(f"{base}/api/v1/clients", headers=headers, timeout=60).json()
        recorded = sum(c["photos"] for c in listed if c["external_id"].startswith("load-"))
        ids = [r["photo_id"] for r in results.values()]
        shas_ok = all(
            r["sha256"] == __import__("hashlib").sha256(photos[key]).hexdigest() for key, r in results.items()
        )
        retry_ok = all(
            v["status"] == 200 and v.get("photo_id") == results[(c, 0)]["photo_id"]
            for c, v in resent.items()
            if (c, 0) in results
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    n = args.clients * args.photos
    res = {
        "clients": args.clients,
        "photos_each": args.photos,
        "submissions": n,
        "accepted": len(results),
        "distinct_photo_ids": len(set(ids)),
        "recorded_by_server": recorded,
        "sha256_match": shas_ok,
        "idempotent_retries_ok": retry_ok,
        "errors": errors[:20],
        "wall_s": wall,
        "upload_s": {"p50": _pct(up_lat, 50), "p95": _pct(up_lat, 95), "max": max(up_lat)},
        "fetch_s": {
            "p50": _pct(fetch_lat, 50),
            "p95": _pct(fetch_lat, 95),
            "max": max(fetch_lat) if fetch_lat else None,
        },
        "uploads_per_s": n / wall,
    }
    (args.out / "web.json").write_text(json.dumps(res, indent=1))
    ok = len(results) == n and len(set(ids)) == n and recorded == n and shas_ok and retry_ok and not errors
    text = "\n".join(
        [
            f"{args.clients} concurrent API clients on loopback, {args.photos} distinct 800x600 JPEG photos each "
            "(`POST /api/v1/photos`, bearer token), one idempotent re-send each, then every photo and its job fetched "
            "back; background assessment (classical segmenter) running meanwhile in the server's worker:",
            "",
            "| measure | value |",
            "|---|---|",
            f"| submissions accepted / recorded by the server / distinct photo ids | {len(results)} / {recorded} / "
            f"{len(set(ids))} of {n} |",
            f"| lost or duplicated submissions | {'none' if ok else 'SEE web.json'} |",
            f"| re-sends answered 200 with the same photo | {'all' if retry_ok else 'NO'} |",
            f"| upload latency p50 / p95 / max | {res['upload_s']['p50']:.3f} / {res['upload_s']['p95']:.3f} / "
            f"{res['upload_s']['max']:.3f} s |",
            f"| fetch latency (photo, job) p50 / p95 / max | {res['fetch_s']['p50']:.3f} / "
            f"{res['fetch_s']['p95']:.3f} / "
            f"{res['fetch_s']['max']:.3f} s |",
            f"| uploads per second (all clients) | {res['uploads_per_s']:.1f} |",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, server and "
            "clients on the same machine.",
        ]
    )
    print(text)
    if not args.no_md:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", "web", text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
