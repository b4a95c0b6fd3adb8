#!/usr/bin/env python3
"""Time from saving a pipeline file to the new pipeline applying, while lines stream through.

sluice reads lines from its standard input (one every millisecond, each holding the wall time it
was written at) and prints what it ships with the console sink (JSON lines). The script rewrites
the pipeline file the way editors do (a temporary file renamed over it), each version setting a
different static label `version`, and measures, per save, the time from the rename to sluice's
"config reloaded" log line (its timestamp): from then on every batch is processed by the new
pipeline. The debounce of the file watch (150 ms of quiet) is part of it.

It also checks what the reload must not break: every line shipped exactly once, and versions
that never go back (each line carries the version in force when it was processed). Prints
min / median / p90 / max over the saves.

usage: reload_latency.py [--sluice target/release/sluice] [--saves 20]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

PIPELINE = """\
stages:
  - static_labels:
      version: "{version}"
"""


def write_pipeline(path: Path, version: int) -> int:
    """Editor-style save; returns the wall time (ns) of the rename."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(PIPELINE.format(version=version))
    saved = time.time_ns()
    os.rename(tmp, path)
    return saved


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(name, values_ms):
    return (
        f"{name:8} min {min(values_ms):7.1f} ms   median {statistics.median(values_ms):7.1f} ms   "
        f"p90 {percentile(values_ms, 90):7.1f} ms   max {max(values_ms):7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sluice", default="target/release/sluice")
    parser.add_argument("--saves", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipelines = tmp / "pipelines"
        pipelines.mkdir()
        pipeline = pipelines / "version.yaml"
        write_pipeline(pipeline, 0)
        (tmp / "sluice.yaml").write_text(
            f"""\
server: {{http_listen_address: 127.0.0.1:0}}
data_dir: {tmp / "data"}
pipelines_dir: {pipelines}
sources:
  lines: {{type: stdin}}
sinks:
  out: {{type: console, format: json}}
"""
        )
        agent = subprocess.Popen(
            [args.sluice, "run", "--config", str(tmp / "sluice.yaml")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        reloaded = []  # wall times (ns) of "config reloaded" log lines
        started = threading.Event()

        def read_log():
            for line in agent.stderr:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                message = record.get("fields", {}).get("message", record.get("message"))
                if message == "sluice started":
                    started.set()
                elif message == "config reloaded":
                    when = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
                    reloaded.append(int(when.timestamp() * 1e9))

        seen = []  # (written_ns, version) in output order

        def read_output():
            for line in agent.stdout:
                entry = json.loads(line)
                seen.append((int(entry["line"]), int(entry["labels"]["version"])))

        threading.Thread(target=read_log, daemon=True).start()
        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        if not started.wait(10):
            agent.kill()
            raise SystemExit("sluice did not start")

        stop = threading.Event()
        written = [0]

        def write_lines():
            while not stop.is_set():
                agent.stdin.write(f"{time.time_ns()}\n")
                agent.stdin.flush()
                written[0] += 1
                time.sleep(0.001)

        writer = threading.Thread(target=write_lines, daemon=True)
        writer.start()
        time.sleep(1)
        saves = []
        for version in range(1, args.saves + 1):
            saves.append((version, write_pipeline(pipeline, version)))
            time.sleep(1.5)
        stop.set()
        writer.join()
        agent.stdin.close()
        try:
            agent.wait(timeout=5)  # the stdin source ends at end of input
        except subprocess.TimeoutExpired:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        reader.join(timeout=10)

    if agent.returncode != 0:
        raise SystemExit(f"sluice exited with {agent.returncode}")
    if len(seen) != written[0]:
        raise SystemExit(f"{written[0]} lines written, {len(seen)} shipped")
    if len({w for w, _ in seen}) != len(seen):
        raise SystemExit("a line was shipped twice")
    versions = [v for _, v in seen]
    if versions != sorted(versions):
        raise SystemExit("a line carries an older version than a line before it")
    latencies = []
    for version, saved in saves:
        if version not in versions:
            raise SystemExit(f"version {version} never applied")
        after = [r for r in reloaded if r >= saved]
        if not after:
            raise SystemExit(f"no reload logged after save {version}")
        latencies.append((min(after) - saved) / 1e6)
    print(f"{len(seen)} lines, {len(saves)} saves: every line once, versions in order")
    print(summary("reload", latencies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
