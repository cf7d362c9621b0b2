"""Load test of ``unetkit serve``: latency, throughput and memory under 1 / 4 / 16 concurrent clients, with and
without micro-batching.

For each round and each mode (``--batching on``, ``--batching off``; the order alternates between rounds) a
fresh server process runs ``unetkit serve RUN --host 127.0.0.1 --port 0 --tta none`` (loopback only, a free
port) and, once ``/ready`` answers, each client level runs: C client threads, each on its own keep-alive
connection, send ``--requests`` POST /predict of real 512 x 512 ISBI slices (raw PNG bodies, mask answers).
Every level also stops at ``--level-seconds``, so a run is bounded in count and time.

Per level: p50 / p99 latency, throughput (answered requests per second of wall time), errors (anything but
200, or a failed connection), 5xx answers, and the server's peak RSS (psutil samples of the server process,
and the kernel's high-water mark ``VmHWM`` since the process started). The summary gives per mode and level
the median over rounds, and the throughput ratio batching / no batching.

A run folder is needed. A short training run on ISBI makes a realistic one (the model's size, not its
accuracy, sets the speed)::

    .venv/bin/unetkit train ../shared/datasets/isbi2012_em_membrane --value-map 0:1,255:0 \\
        --out runs/isbi-bench --time-budget 2m --overwrite

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_serve.py --run runs/isbi-bench \\
        [--clients 1 4 16] [--requests 8] [--rounds 2] [--max-batch N (default: the server's own)] [--max-wait-ms 5]

Writes ``benchmarks/results/serve.json`` (with the CPU's flags from /proc/cpuinfo) and prints it.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
ISBI = ROOT.parent / "shared" / "datasets" / "isbi2012_em_membrane" / "images"
RESULT = ROOT / "benchmarks" / "results" / "serve.json"
HOST = "127.0.0.1"  # loopback only: this benchmark never sends traffic anywhere else


def slices(count: int) -> list[bytes]:
    """The PNG bytes of up to ``count`` real 512 x 512 ISBI slices."""
    files = sorted(ISBI.glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)[:count]
    if not files:
        raise SystemExit(f"ISBI slices not found under {ISBI}")
    return [f.read_bytes() for f in files]


class ServerProcess:
    """``unetkit serve`` in a subprocess on a free loopback port, with a thread sampling its RSS."""

    def __init__(self, run: Path, *, batching: bool, max_batch: int | None, max_wait_ms: float, fast: bool) -> None:
        command = [sys.executable, "-m", "unetkit.cli", "serve", str(run), "--host", HOST, "--port", "0",
                   "--tta", "none", "--max-wait-ms", str(max_wait_ms), "--max-queue", "64"]
        command += ["--max-batch", str(max_batch)] if max_batch else []
        command += ["--batching", "on" if batching else "off"] + ([] if fast else ["--no-fast"])
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("UNETKIT_API_KEY", None)
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("serving "):
            self.proc.kill()
            raise SystemExit(f"the server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1].split("/")[0])
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        import psutil

        process = psutil.Process(self.proc.pid)
        while not self._stop.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
            except psutil.Error:
                return

    def vm_hwm(self) -> int | None:
        """The kernel's peak resident set of the server process in bytes (Linux), or None."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("the server never became ready")

    def batching(self) -> dict:
        """The server's own batching settings (``/info``), recorded with every row."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        conn.request("GET", "/info")
        info = json.loads(conn.getresponse().read())
        conn.close()
        return info["batching"]

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client(port: int, bodies: list[bytes], offset: int, requests: int, until: float, out: dict) -> None:
    """One client: ``requests`` POSTs on one keep-alive connection (a new one after an error), until ``until``."""
    conn = None
    for i in range(requests):
        if time.monotonic() > until:
            break
        started = time.perf_counter()
        try:
            conn = conn or http.client.HTTPConnection(HOST, port, timeout=300)
            conn.request("POST", "/predict", body=bodies[(offset + i) % len(bodies)],
                         headers={"Content-Type": "application/octet-stream"})  # fmt: skip
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = -1
            if conn is not None:
                conn.close()
            conn = None
        seconds = time.perf_counter() - started
        with out["lock"]:
            out["statuses"].append(status)
            if status == 200:
                out["latencies"].append(seconds)
    if conn is not None:
        conn.close()


def level(server: ServerProcess, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """C concurrent clients against ``server``: latency percentiles, throughput, errors, peak RSS."""
    out: dict = {"lock": threading.Lock(), "statuses": [], "latencies": []}
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(server.port, bodies, c, requests, until, out))
               for c in range(clients)]  # fmt: skip
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies = sorted(out["latencies"])
    statuses = out["statuses"]

    def percentile(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 4) if latencies else None

    return {
        "clients": clients,
        "requests": len(statuses),
        "ok": len(latencies),
        "errors": sum(s != 200 for s in statuses),
        "http_5xx": sum(500 <= s < 600 for s in statuses),
        "p50_s": percentile(0.50),
        "p99_s": percentile(0.99),
        "throughput_rps": round(len(latencies) / wall, 3) if wall > 0 else None,
        "wall_s": round(wall, 3),
        "server_peak_rss_mb": round(server.peak_rss / 2**20, 1),
    }


def _median_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None


def summary(rows: list[dict]) -> dict:
    """Per mode and client count: medians over rounds; throughput ratio batching / no batching."""
    table: dict = {}
    for mode in ("batching", "no_batching"):
        for clients in sorted({r["clients"] for r in rows}):
            picked = [r for r in rows if r["mode"] == mode and r["clients"] == clients]
            if not picked:
                continue
            med = functools.partial(_median_of, picked)
            table.setdefault(mode, {})[str(clients)] = {
                "throughput_rps": med("throughput_rps"), "p50_s": med("p50_s"), "p99_s": med("p99_s"),
                "errors": sum(r["errors"] for r in picked), "http_5xx": sum(r["http_5xx"] for r in picked),
                "server_peak_rss_mb": max(r["server_peak_rss_mb"] for r in picked),
            }  # fmt: skip
    ratios = {}
    for clients, on in table.get("batching", {}).items():
        off = table.get("no_batching", {}).get(clients)
        if off and off["throughput_rps"]:
            ratios[clients] = round(on["throughput_rps"] / off["throughput_rps"], 3)
    one = table.get("batching", {}).get("1", {}).get("throughput_rps")
    scaling = {c: round(v["throughput_rps"] / one, 3) for c, v in table.get("batching", {}).items()} if one else {}
    return {"table": table, "throughput_batching_over_no_batching": ratios,
            "batching_throughput_over_one_client": scaling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder written by `unetkit train`")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=8, help="requests per client per level")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--level-seconds", type=float, default=120.0, help="each level stops sending after this")
    parser.add_argument("--max-batch", type=int, default=None, help="default: the server's own choice")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--no-fast", action="store_true", help="serve in plain eager fp32")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if not (args.run / "plan.yaml").is_file():
        raise SystemExit(f"{args.run}: no plan.yaml; make a run first (see this script's docstring)")
    if max(args.clients) > 64 or args.requests > 1000 or args.rounds > 10:
        raise SystemExit("keep the load bounded: at most 64 clients, 1000 requests each, 10 rounds")
    import torch

    from unetkit.precision import cpu_flags

    bodies = slices(30)
    started = time.perf_counter()
    report: dict = {
        "what": "unetkit serve under concurrent clients, 512x512 ISBI PNG slices, mask answers, no TTA; "
                "fresh server per round and mode, modes interleaved",
        "machine": {"cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_avg_start": os.getloadavg()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
        "rows": [],
    }  # fmt: skip
    for round_ in range(args.rounds):
        modes = ["batching", "no_batching"] if round_ % 2 == 0 else ["no_batching", "batching"]
        for mode in modes:
            server = ServerProcess(args.run, batching=mode == "batching", max_batch=args.max_batch,
                                   max_wait_ms=args.max_wait_ms, fast=not args.no_fast)  # fmt: skip
            try:
                server.wait_ready()
                settings = server.batching()
                for clients in args.clients:
                    row = level(server, bodies, clients, args.requests, args.level_seconds)
                    row.update(mode=mode, round=round_, server_batching=settings)
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
                hwm = server.vm_hwm()
                for row in report["rows"]:
                    if row["mode"] == mode and row["round"] == round_:
                        row["server_vm_hwm_mb"] = round(hwm / 2**20, 1) if hwm else None
            finally:
                server.stop()
    report["summary"] = summary(report["rows"])
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
