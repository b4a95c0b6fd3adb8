#!/usr/bin/env python3
"""End-to-end cost of sluice per line: a log file read from its start, the envelope and the JSON
payload parsed, labels {job, container, stream, service, level} set, batches pushed to Loki
(a receiver that answers 204 at once, so that only sluice's work is measured).

Prints lines per second, CPU seconds (user + sys of the sluice process) per million lines and
peak RSS (VmHWM).

usage: e2e.py [--sluice target/release/sluice] [--lines 2000000] [--format docker|cri]
              [--files 1] [--workdir ~/.cache/sluice-bench]
The workload file is generated once per (lines, format) by gen_workload.py and kept in workdir.
With --files N the workload's lines are dealt round-robin into N files (kept in workdir too),
all followed at once: the cost of many open files, and the memory they hold.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import NullLoki, start_null_loki  # noqa: E402
PIPELINE = """\
stages:
  - json:
      expressions: {level: level, service: service}
  - labels: {level: , service: }
"""


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of all the process's threads."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


def split(workload: Path, files: int) -> Path:
    """The workload dealt round-robin into `files` files (made once)."""
    out = workload.with_name(f"{workload.stem}-in-{files}")
    if not out.exists():
        tmp = out.with_name(out.name + ".tmp")
        tmp.mkdir(exist_ok=True)
        handles = [open(tmp / f"{i:05}.log", "wb") for i in range(files)]
        with open(workload, "rb") as f:
            for n, line in enumerate(f):
                handles[n % files].write(line)
        for h in handles:
            h.close()
        tmp.rename(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sluice", default="target/release/sluice")
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--format", choices=["docker", "cri"], default="docker")
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--queue", help="the Loki sink's queue.max_bytes (default: the sink's)")
    parser.add_argument("--workdir", default=os.path.expanduser("~/.cache/sluice-bench"))
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workload = workdir / f"workload-{args.format}-{args.lines}.log"
    if not workload.exists():
        tmp = workload.with_suffix(".tmp")
        subprocess.run([sys.executable, str(HERE / "gen_workload.py"), str(tmp), "--lines", str(args.lines), "--format", args.format], check=True)
        tmp.rename(workload)

    include = str(workload)
    if args.files > 1:
        include = str(split(workload, args.files)) + "/*.log"

    server = start_null_loki()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pipelines").mkdir()
        (tmp / "pipelines" / "bench.yaml").write_text(PIPELINE)
        (tmp / "sluice.yaml").write_text(
            f"""\
server: {{http_listen_address: 127.0.0.1:0}}
data_dir: {tmp / "data"}
pipelines_dir: {tmp / "pipelines"}
sources:
  bench:
    type: files
    include: ["{include}"]
    format: {args.format}
    labels: {{job: bench, container: bench}}
sinks:
  loki:
    type: loki
    url: http://127.0.0.1:{server.server_port}/loki/api/v1/push
"""
            + (f"    queue: {{max_bytes: {args.queue}}}\n" if args.queue else "")
        )
        started = time.monotonic()
        agent = subprocess.Popen([args.sluice, "run", "--config", str(tmp / "sluice.yaml")], stderr=subprocess.PIPE, text=True)
        try:
            port = None
            while port is None:
                line = agent.stderr.readline()
                if not line:
                    raise SystemExit("sluice exited before it listened")
                if '"sluice started"' in line:
                    port = re.search(r'"http":"[^"]*:(\d+)"', line).group(1)
            threading.Thread(target=lambda: [None for _ in agent.stderr], daemon=True).start()
            sent = 0.0
            while sent < args.lines:
                time.sleep(0.2)
                if agent.poll() is not None:
                    raise SystemExit(f"sluice exited with {agent.returncode}")
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
                sent = metric_sum(text, "sluice_sink_lines_sent_total")
            elapsed = time.monotonic() - started
            cpu = proc_cpu_seconds(agent.pid)
            rss = proc_peak_rss_mib(agent.pid)
            switches = proc_context_switches(agent.pid)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        server.shutdown()

    print(f"workload     {workload.name} ({workload.stat().st_size / args.lines:.0f} B/line) in {args.files} file(s)")
    print(f"lines        {int(sent)} in {elapsed:.2f} s wall ({sent / elapsed / 1e6:.2f} M lines/s)")
    print(f"cpu          {cpu:.2f} s user+sys = {cpu / (sent / 1e6):.2f} CPU-s per million lines ({sent / cpu / 1e6:.2f} M lines per CPU-second)")
    print(f"peak rss     {rss:.1f} MiB")
    print(f"switches     {switches / (sent / 1e3):.1f} context switches per thousand lines")
    print(f"to loki      {NullLoki.pushes} pushes, {NullLoki.body_bytes / 1e6:.1f} MB snappy protobuf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
