#!/usr/bin/env python3
"""Docker benchmark: N containers write structured JSON lines through the real engine (json-file
logging), sluice follows them through the Engine API, parses them with the shipped
structured-json pipeline and pushes them to a null Loki (answers 204). A benchmark, not a test.

Prints lines/s, sluice's CPU seconds per million lines and peak RSS, dockerd's (and the
containers' containerd shims') CPU for the same lines when /proc lets the script read it, and
sluice's memory while it follows the N containers idle (before any line, and after the burst).

Live (default): sluice starts first; the N containers are created and started, each generator
waiting for a file on a bind mount; once sluice follows all N (sluice_source_streams) the idle
phase is measured, then CPU counters are read, the file is created (every generator writes at
once) and the script polls /metrics until sluice_sink_lines_sent_total equals the expected total;
CPU counters are read again. The containers then sleep (second idle phase).
--backlog: the containers write every line before sluice starts (dockerd's json-file write side
is measured alone), then sluice starts and reads the backlog (dockerd's read side and sluice).
Containers carry the label sluice-bench=<run> and are removed at the end, also on errors, Ctrl-C
and SIGTERM.

Checks: the sent count must equal the total exactly (also after the idle phase: no duplicates),
no drops, no pipeline errors, no truncation; the receiver's pushes are decoded (snappy +
protobuf in pure Python, after the measurement) and every container's line count must match,
with service/level labels matching each stream's lines. Any failure exits 1.

The containers' json-file logs get max-size=1g unless --log-opt says otherwise, so that no
rotation happens during the burst: on Docker 20.10 a follow stream that is more than one
rotation behind skips whole rotated files (`docker logs -f` does the same), which this script
reports as lost lines (e.g. --log-opt max-size=10m with the default 50,000 lines per container).

usage: docker.py [--sluice PATH] [--containers 20] [--lines 1000000] [--idle-seconds 10]
                 [--backlog] [--pipeline pipelines/structured-json.yaml] [--log-opt K=V]...
                 [--json] [--perf FILE] [--no-decode] [--keep-containers]
--lines is the total over all containers (0: idle memory only). The generator image
(scripts/bench/loggen_bench.rs, static, + busybox-static) is built once per source version.
"""
import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Sluice,
    cmdline,
    decode_push,
    kept_bodies,
    metric_samples,
    metric_sum,
    parse_labels,
    pids_of,
    proc_cpu_seconds,
    proc_cpu_split,
    proc_peak_rss_mib,
    proc_rss_mib,
    proc_status_kib,
    refuse_debug_binary,
    start_null_loki,
    system_cpu_seconds,
    wait_until,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_SLUICE = os.path.expanduser("~/.cache/sluice-target/release/sluice")
LABEL = "sluice-bench"
SOCKET = "/var/run/docker.sock"


def log(msg: str):
    print(f"[docker-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- Engine API over the unix socket -----------------------------------------------------------

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def api(method: str, path: str, body=None, ok=(200, 201, 204, 304)):
    conn = _UnixConnection(SOCKET)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, "/v1.41" + path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status not in ok:
            raise RuntimeError(f"{method} {path}: {resp.status} {data.decode(errors='replace').strip()}")
        return json.loads(data) if data and resp.getheader("Content-Type", "").startswith("application/json") else None
    finally:
        conn.close()


def bench_containers(run: str = None):
    label = f"{LABEL}={run}" if run else LABEL
    query = json.dumps({"label": [label]})
    return api("GET", "/containers/json?all=1&filters=" + urllib_quote(query))


def urllib_quote(s: str) -> str:
    import urllib.parse

    return urllib.parse.quote(s, safe="")


def remove_containers(run: str):
    ids = [c["Id"] for c in bench_containers(run)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: api("DELETE", f"/containers/{i}?force=1&v=1", ok=(204, 404)), ids))
    return len(ids)


# --- the generator image -----------------------------------------------------------------------

def image() -> str:
    """sluice-bench/loggen:<hash of the generator's source>, built if missing."""
    source = (HERE / "loggen_bench.rs").read_bytes()
    tag = f"sluice-bench/loggen:{hashlib.sha256(source).hexdigest()[:16]}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
    if busybox is None:
        raise SystemExit("busybox-static is needed to build the generator image: apt-get install busybox-static")
    log(f"building the generator image {tag}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "bin").mkdir(parents=True)
        (root / "sync").mkdir()
        subprocess.run(
            ["rustc", "--edition", "2021", "-O", "-C", "target-feature=+crt-static", "-o", str(root / "loggen"), str(HERE / "loggen_bench.rs")],
            check=True,
        )
        shutil.copy(busybox, root / "bin" / "busybox")
        for tool in ["sh", "sleep", "cat", "ls", "true"]:
            os.symlink("busybox", root / "bin" / tool)
        tar = Path(tmp) / "image.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
        subprocess.run(["docker", "import", "--change", "ENV PATH=/bin", str(tar), tag], check=True, capture_output=True)
    return tag


# --- CPU accounting of the engine --------------------------------------------------------------

def engine_pids(container_ids):
    """{role: [pids]}: dockerd, containerd, and the shims of the bench's containers."""
    shims = []
    wanted = set(container_ids)
    for name in ("containerd-shim-runc-v2", "containerd-shim", "containerd-shim-runc-v1"):
        for pid in pids_of(name):
            args = cmdline(pid)
            if any(a in wanted for a in args) or any(a.endswith(cid) for a in args for cid in wanted):
                shims.append(pid)
    return {"dockerd": pids_of("dockerd"), "containerd": pids_of("containerd"), "shims": shims}


def cpu_of(pids_by_role):
    """{role: CPU seconds, or None where unreadable}."""
    out = {}
    for role, pids in pids_by_role.items():
        try:
            out[role] = sum(proc_cpu_seconds(p) for p in pids) if pids else None
        except OSError:
            out[role] = None
    return out


def container_cpu_seconds(container_ids):
    """The containers' own CPU (the generators) from cgroup v1 cpuacct or v2 cpu.stat; None
    where not readable."""
    total = 0.0
    for cid in container_ids:
        for path in (
            f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
            f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage",
        ):
            if os.path.exists(path):
                total += int(Path(path).read_text()) / 1e9
                break
        else:
            for path in (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
                if os.path.exists(path):
                    usage = next(l for l in Path(path).read_text().splitlines() if l.startswith("usage_usec"))
                    total += int(usage.split()[1]) / 1e6
                    break
            else:
                return None
    return total


def diff(after, before):
    return {k: (after[k] - before[k]) if after.get(k) is not None and before.get(k) is not None else None for k in before}


# --- the run -----------------------------------------------------------------------------------

def git_state(binary: str):
    """HEAD, the sources modified in the working tree now, and those changed after the binary was
    built (the binary then does not hold them)."""

    def git(*args):
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.rstrip() if r.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "build.rs")
    built = os.path.getmtime(binary)
    newer = [str(p.relative_to(REPO)) for p in [*(REPO / "src").rglob("*.rs"), REPO / "Cargo.toml", REPO / "Cargo.lock"] if p.exists() and p.stat().st_mtime > built]
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_sources": sorted({l[3:] for l in dirty.splitlines() if l.strip()}) if dirty else [],
        "binary_built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(built)),
        "sources_newer_than_binary": sorted(newer),
    }


def split(total: int, n: int):
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sluice", default=DEFAULT_SLUICE, help=f"release binary (default {DEFAULT_SLUICE})")
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--lines", type=int, default=1_000_000, help="total over all containers (0: idle memory only)")
    parser.add_argument("--idle-seconds", type=float, default=10, help="idle phase before and after the burst")
    parser.add_argument("--pipeline", default=str(REPO / "pipelines" / "structured-json.yaml"))
    parser.add_argument("--timeout", type=float, default=900, help="for the burst to be sent")
    parser.add_argument("--stall-timeout", type=float, default=75, help="give up when no line was sent for this long (sluice's stall check runs every 60 s)")
    parser.add_argument("--log-opt", action="append", metavar="KEY=VALUE", help="json-file options of the containers (default max-size=1g: no rotation during the burst; the daemon's own log-opts apply to keys not given)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--perf", metavar="FILE", help="perf record -e cpu-clock -g sluice during the burst into FILE (costs CPU: not for figures)")
    parser.add_argument("--backlog", action="store_true", help="the containers write every line before sluice starts: the engine's write and read sides are measured apart, sluice reads a backlog")
    parser.add_argument("--no-decode", action="store_true", help="do not keep and decode the pushes")
    parser.add_argument("--keep-containers", action="store_true", help="leave the containers running at the end")
    args = parser.parse_args()
    if args.containers < 1 or args.lines < 0:
        parser.error("--containers >= 1 and --lines >= 0")
    if args.backlog and args.lines == 0:
        parser.error("--backlog needs lines")
    log_opts = dict(o.split("=", 1) for o in (args.log_opt or ["max-size=1g"]))

    binary = refuse_debug_binary(args.sluice)
    run = uuid.uuid4().hex[:8]
    per_container = split(args.lines, args.containers)
    total = sum(per_container)
    result = {
        "sluice": binary,
        "git": git_state(binary),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "loadavg_start": os.getloadavg()},
        "containers": args.containers,
        "lines": total,
        "pipeline": args.pipeline,
        "run": run,
    }
    try:
        version = api("GET", "/version")
        result["engine"] = {"version": version.get("Version"), "api": version.get("ApiVersion")}
        info = api("GET", "/info")
        result["engine"].update({"cgroup": f"{info.get('CgroupVersion')}/{info.get('CgroupDriver')}", "storage": info.get("Driver")})
    except OSError as e:
        raise SystemExit(f"cannot reach the Docker engine at {SOCKET}: {e}")
    leftovers = bench_containers()
    if leftovers:
        log(f"warning: {len(leftovers)} container(s) of an earlier bench run still exist (label {LABEL}); remove them: docker rm -f $(docker ps -aq --filter label={LABEL})")
    tag = image()

    failures = []
    perf = None
    sluice = None
    stop = {"signal": None}

    def on_term(signum, _frame):
        stop["signal"] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with tempfile.TemporaryDirectory(prefix="sluice-docker-bench-") as tmp:
        tmp = Path(tmp)
        sync = tmp / "sync"
        sync.mkdir()
        (tmp / "pipelines").mkdir()
        shutil.copy(args.pipeline, tmp / "pipelines" / Path(args.pipeline).name)
        kept = None if args.no_decode else open(tmp / "pushes.bin", "wb")
        server = start_null_loki(kept)
        (tmp / "sluice.yaml").write_text(
            f"""\
server: {{http_listen_address: 127.0.0.1:0}}
data_dir: {tmp / "data"}
pipelines_dir: {tmp / "pipelines"}
sources:
  docker:
    type: docker
    host: unix://{SOCKET}
    filters:
      labels: ["{LABEL}={run}"]
sinks:
  loki:
    type: loki
    url: http://127.0.0.1:{server.server_port}/loki/api/v1/push
"""
        )
        ids = []
        try:
            def create(i):
                cmd = ["/loggen", "--lines", str(per_container[i]), "--seed", str(i + 1), "--wait-for", "/sync/go", "--then-sleep"]
                if args.backlog:
                    cmd += ["--done-file", f"/sync/done-{i}"]
                body = {
                    "Image": tag,
                    "Cmd": cmd,
                    "Labels": {LABEL: run},
                    "HostConfig": {
                        "NetworkMode": "none",
                        "Binds": [f"{sync}:/sync" + ("" if args.backlog else ":ro")],
                        "LogConfig": {"Type": "json-file", "Config": log_opts},
                    },
                }
                cid = api("POST", f"/containers/create?name={LABEL}-{run}-{i:03d}", body)["Id"]
                ids.append(cid)
                api("POST", f"/containers/{cid}/start")
                return cid

            def start_containers():
                """Creates and starts the N containers (generators waiting for sync/go)."""
                log(f"starting {args.containers} containers ({total} lines in all)")
                before = cpu_of({"dockerd": pids_of("dockerd")})
                t = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    list(pool.map(create, range(args.containers)))
                result["containers_start_s"] = time.monotonic() - t
                result["log_config"] = api("GET", f"/containers/{ids[0]}/json")["HostConfig"]["LogConfig"]
                return t, before

            def start_sluice():
                nonlocal sluice
                sluice = Sluice(binary, tmp / "sluice.yaml")
                log(f"sluice pid {sluice.pid} on :{sluice.port}; run {run}")
                wait_until(lambda: urllib_ready(sluice.port), 30, what="sluice /ready")

            def idle_phase(key):
                """RSS and CPU while the containers are quiet."""
                c0, s0, w0 = cpu_of(pids), proc_cpu_seconds(sluice.pid), time.monotonic()
                time.sleep(args.idle_seconds)
                c1, s1, w1 = cpu_of(pids), proc_cpu_seconds(sluice.pid), time.monotonic()
                phase = result[key] = {
                    "rss_mib": proc_rss_mib(sluice.pid),
                    "rss_anon_mib": proc_status_kib(sluice.pid, "RssAnon") / 1024,
                    "seconds": w1 - w0,
                    "sluice_cpu_s": s1 - s0,
                    "engine_cpu_s": diff(c1, c0),
                }
                if "rss_mib_no_container" in result:
                    phase["rss_per_container_kib"] = (phase["rss_mib"] - result["rss_mib_no_container"]) * 1024 / args.containers

            if not args.backlog:
                # Live: sluice follows the N containers before they write.
                start_sluice()
                time.sleep(1)
                result["rss_mib_no_container"] = proc_rss_mib(sluice.pid)
                t, before_setup = start_containers()

                def followed():
                    return metric_sum(sluice.metrics(), "sluice_source_streams", source="docker") >= args.containers

                wait_until(followed, 120, interval=0.2, what=f"sluice to follow {args.containers} containers")
                result["follow_all_s"] = time.monotonic() - t
                result["dockerd_cpu_s_setup"] = diff(cpu_of({"dockerd": pids_of("dockerd")}), before_setup)["dockerd"]
                time.sleep(1)
                pids = engine_pids(ids)
                result["engine_pids"] = {k: len(v) for k, v in pids.items()}
                # Idle, before any line: what following N quiet containers costs.
                idle_phase("idle_before")
            else:
                # Backlog: the containers write everything first (the engine's write side is
                # measured alone), then sluice starts and reads it all (the read side).
                t, before_setup = start_containers()
                time.sleep(1)
                result["dockerd_cpu_s_setup"] = diff(cpu_of({"dockerd": pids_of("dockerd")}), before_setup)["dockerd"]
                pids = engine_pids(ids)
                result["engine_pids"] = {k: len(v) for k, v in pids.items()}
                if total > 0:
                    w0, t = cpu_of(pids), time.monotonic()
                    (sync / "go").touch()
                    log(f"write phase: {total} lines from {args.containers} containers, no reader")
                    wait_until(lambda: all((sync / f"done-{i}").exists() for i, n in enumerate(per_container)), args.timeout, what="the generators")
                    written = time.monotonic() - t
                    time.sleep(1)  # the engine drains the containers' pipes
                    engine = diff(cpu_of(pids), w0)
                    result["write_phase"] = {
                        "seconds": written,
                        "engine_cpu_s": engine,
                        "engine_cpu_s_per_million": {k: (v / (total / 1e6) if v is not None else None) for k, v in engine.items()},
                    }

            if total > 0:
                if args.backlog:
                    metrics0 = ""
                    e0, sys0, g0 = cpu_of(pids), system_cpu_seconds(), container_cpu_seconds(ids)
                    s0, u0 = 0.0, (0.0, 0.0)  # a fresh process
                    me0 = os.times()
                    t0 = time.monotonic()
                    start_sluice()
                    log(f"read phase: sluice reads {total} lines from {args.containers} containers")
                    if args.perf:
                        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(sluice.pid), "-o", args.perf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                else:
                    if args.perf:
                        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(sluice.pid), "-o", args.perf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(1)
                    metrics0 = sluice.metrics()
                    e0, s0, sys0, g0 = cpu_of(pids), proc_cpu_seconds(sluice.pid), system_cpu_seconds(), container_cpu_seconds(ids)
                    u0 = proc_cpu_split(sluice.pid)
                    me0 = os.times()
                    t0 = time.monotonic()
                    (sync / "go").touch()
                    log(f"burst: {total} lines from {args.containers} containers")
                sent0 = metric_sum(metrics0, "sluice_sink_lines_sent_total")
                first_sent = None
                sent = sent0
                last_report = last_progress = t0
                while sent < total + sent0:
                    time.sleep(0.05)
                    previous, sent = sent, metric_sum(sluice.metrics(), "sluice_sink_lines_sent_total")
                    now = time.monotonic()
                    if sent != previous:
                        last_progress = now
                    elif now - last_progress > args.stall_timeout:
                        failures.append(f"only {int(sent - sent0)} of {total} lines sent; none for {args.stall_timeout:.0f} s")
                        break
                    if first_sent is None and sent > sent0:
                        first_sent = now
                    if now - last_report > 5:
                        log(f"  {int(sent - sent0)} / {total} sent")
                        last_report = now
                    if now - t0 > args.timeout:
                        failures.append(f"only {int(sent - sent0)} of {total} lines sent after {args.timeout:.0f} s")
                        break
                t1 = time.monotonic()
                e1, s1, sys1, g1 = cpu_of(pids), proc_cpu_seconds(sluice.pid), system_cpu_seconds(), container_cpu_seconds(ids)
                u1 = proc_cpu_split(sluice.pid)
                me1 = os.times()
                if perf is not None:
                    perf.send_signal(signal.SIGINT)
                    perf.wait(timeout=60)
                    perf = None
                metrics1 = sluice.metrics()
                engine = diff(e1, e0)
                millions = total / 1e6
                burst = {
                    "mode": "backlog" if args.backlog else "live",
                    "wall_s": t1 - t0,
                    "wall_s_first_to_all_sent": (t1 - first_sent) if first_sent else None,
                    "lines_per_s": total / (t1 - t0),
                    "lines_per_s_from_first_sent": total / (t1 - first_sent) if first_sent and t1 > first_sent else None,
                    "sluice_cpu_s": s1 - s0,
                    "sluice_cpu_s_per_million": (s1 - s0) / millions,
                    "sluice_user_sys_s": [u1[0] - u0[0], u1[1] - u0[1]],
                    "sluice_lines_per_cpu_s": total / (s1 - s0) if s1 > s0 else None,
                    "engine_cpu_s": engine,
                    "engine_cpu_s_per_million": {k: (v / millions if v is not None else None) for k, v in engine.items()},
                    "generators_cpu_s": (g1 - g0) if g0 is not None and g1 is not None else None,
                    "machine_busy_cpu_s": sys1 - sys0,
                    "harness_cpu_s": (me1.user + me1.system) - (me0.user + me0.system),
                    "source_bytes": metric_sum(metrics1, "sluice_source_bytes_total", source="docker") - metric_sum(metrics0, "sluice_source_bytes_total", source="docker"),
                    "source_lines": metric_sum(metrics1, "sluice_source_lines_total", source="docker") - metric_sum(metrics0, "sluice_source_lines_total", source="docker"),
                    "pushes": server.RequestHandlerClass.pushes,
                    "push_bytes": server.RequestHandlerClass.body_bytes,
                }
                if engine.get("dockerd"):
                    burst["sluice_to_dockerd_cpu_ratio"] = (s1 - s0) / engine["dockerd"]
                    burst["sluice_to_engine_cpu_ratio"] = (s1 - s0) / sum(v for k, v in engine.items() if v and k in ("dockerd", "shims"))
                result["burst"] = burst

                # Idle after the burst: containers sleep; no more lines may come.
                idle_phase("idle_after")
                metrics2 = sluice.metrics()
                sent_final = metric_sum(metrics2, "sluice_sink_lines_sent_total") - sent0
                result["sent"] = int(sent_final)
                if sent_final != total:
                    failures.append(f"sluice_sink_lines_sent_total: {int(sent_final)} lines sent, {total} expected")
                for name in ("sluice_sink_dropped_total", "sluice_pipeline_errors_total", "sluice_pipeline_dropped_total", "sluice_source_dropped_total", "sluice_sink_lines_truncated_total"):
                    value = metric_sum(metrics2, name)
                    if value:
                        failures.append(f"{name} = {value:g}: {metric_samples(metrics2, name)}")
                result["docker_source"] = {
                    n: metric_sum(metrics2, m)
                    for n, m in (
                        ("daemon_errors", "sluice_docker_daemon_errors_total"),
                        ("stalls", "sluice_docker_stream_stalls_total"),
                        ("reconnects", "sluice_docker_reconnects_total"),
                        ("replays_skipped", "sluice_docker_replayed_lines_skipped_total"),
                    )
                }
                result["sluice_warnings"] = sluice.warnings[:20]
            result["peak_rss_mib"] = proc_peak_rss_mib(sluice.pid)
            result["loadavg_end"] = os.getloadavg()
        except KeyboardInterrupt:
            failures.append(f"interrupted ({signal.Signals(stop['signal']).name if stop['signal'] else 'SIGINT'})")
        finally:
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
            if args.keep_containers:
                log(f"keeping the containers: docker rm -f $(docker ps -aq --filter label={LABEL}={run})")
            else:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the removal finish
                removed = remove_containers(run)
                log(f"removed {removed} containers")
                signal.signal(signal.SIGINT, signal.default_int_handler)
            if sluice is not None:
                code = sluice.stop()
                if code != 0 and not failures:
                    failures.append(f"sluice exited with {code}: {''.join(sluice.tail[-5:])}")
            server.shutdown()
            if kept is not None:
                kept.close()

        # Decode what the receiver got (after the measurement: it costs no CPU during it).
        if kept is not None and total > 0 and "burst" in result:
            log("decoding the pushes")
            t = time.monotonic()
            per_name, services_ok, labels_seen, checked = {}, True, set(), 0
            for body in kept_bodies(tmp / "pushes.bin"):
                for labels, count, first in decode_push(body, first_entries=True):
                    ls = parse_labels(labels)
                    labels_seen.add(tuple(sorted(k for k in ls)))
                    per_name[ls.get("container_name")] = per_name.get(ls.get("container_name"), 0) + count
                    if first is not None:
                        checked += 1
                        line, meta = first
                        record = json.loads(line)
                        if record.get("service") != ls.get("service") or record.get("level") != ls.get("level") or meta.get("trace_id") != record.get("trace_id"):
                            services_ok = False
            expected = {f"{LABEL}-{run}-{i:03d}": n for i, n in enumerate(per_container) if n}
            received = sum(per_name.values())
            result["received"] = {
                "lines": received,
                "label_names": sorted({n for s in labels_seen for n in s}),
                "decode_s": time.monotonic() - t,
            }
            if received != total:
                failures.append(f"the receiver decoded {received} lines, {total} expected")
            if per_name != expected:
                wrong = {k: (per_name.get(k, 0), expected.get(k, 0)) for k in sorted(set(per_name) | set(expected), key=str) if per_name.get(k) != expected.get(k)}
                result["received"]["wrong_containers"] = wrong
                shown = ", ".join(f"{k}: {got}/{want}" for k, (got, want) in list(wrong.items())[:6])
                failures.append(f"{len(wrong)} container(s) with lines missing or extra (received/expected): {shown}")
            if not services_ok:
                failures.append("a stream's labels do not match its lines (service/level labels or trace_id metadata)")
            if not all({"service", "level", "container_name", "stream"} <= set(s) for s in labels_seen):
                failures.append(f"streams without service/level/container_name/stream labels: {labels_seen}")

    result["failures"] = failures
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    if failures:
        for f in failures:
            log(f"FAILED: {f}")
        if sluice is not None:
            log("sluice's last log lines:\n" + "".join(sluice.tail[-10:]))
        return 1
    return 0


def urllib_ready(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5).status == 200
    except (urllib.error.URLError, OSError):
        return False


def fmt(v, spec=".2f", unit=""):
    return "n/a (unreadable)" if v is None else f"{v:{spec}}{unit}"


def print_summary(r):
    g = r["git"]
    print(f"sluice       {r['sluice']} (built {g['binary_built']}); tree at {g['commit']}" + (f" + uncommitted {', '.join(g['dirty_sources'])}" if g["dirty_sources"] else ""))
    if g["sources_newer_than_binary"]:
        print(f"             changed since the build (not measured): {', '.join(g['sources_newer_than_binary'])}")
    e = r.get("engine", {})
    print(f"engine       Docker {e.get('version')} (API {e.get('api')}, cgroup {e.get('cgroup')}, {e.get('storage')})")
    print(f"host         {r['host']['cpus']} CPUs, load average at start {', '.join(f'{x:.2f}' for x in r['host']['loadavg_start'])}" + (f", at end {', '.join(f'{x:.2f}' for x in r['loadavg_end'])}" if "loadavg_end" in r else ""))
    lc = r.get("log_config") or {}
    print(f"workload     {r['containers']} containers, {r['lines']} lines ({r['lines'] // max(r['containers'], 1)} each), pipeline {Path(r['pipeline']).name}, "
          f"logging {lc.get('Type')} {lc.get('Config')}")
    if "containers_start_s" in r:
        print(f"setup        containers started in {r['containers_start_s']:.1f} s" + (f", all followed after {r['follow_all_s']:.1f} s" if "follow_all_s" in r else "")
              + f" (dockerd {fmt(r.get('dockerd_cpu_s_setup'))} CPU-s for it)")
    w = r.get("write_phase")
    if w:
        ec, pm = w["engine_cpu_s"], w["engine_cpu_s_per_million"]
        print(f"write phase  {r['lines']} lines written in {w['seconds']:.2f} s with no reader: dockerd {fmt(ec.get('dockerd'))} s = {fmt(pm.get('dockerd'))} CPU-s per million lines, shims {fmt(ec.get('shims'))} s")
    b = r.get("burst")
    if b:
        lines = r["lines"]
        what = "from sluice's start to all sent (backlog)" if b["mode"] == "backlog" else "from the generators' start to all sent"
        print(f"throughput   {lines} lines in {b['wall_s']:.2f} s {what}: {b['lines_per_s'] / 1e3:.1f} k lines/s"
              + (f" ({b['lines_per_s_from_first_sent'] / 1e3:.1f} k lines/s from the first line sent, {b['wall_s_first_to_all_sent']:.2f} s)" if b.get("lines_per_s_from_first_sent") else ""))
        print(f"line size    {b['source_bytes'] / max(b['source_lines'], 1):.0f} B per line read by sluice; {b['pushes']} pushes, {b['push_bytes'] / 1e6:.1f} MB snappy protobuf")
        print(f"sluice cpu   {b['sluice_cpu_s']:.2f} s (user {b['sluice_user_sys_s'][0]:.2f}, sys {b['sluice_user_sys_s'][1]:.2f}) = {b['sluice_cpu_s_per_million']:.2f} CPU-s per million lines "
              f"({fmt(b['sluice_lines_per_cpu_s'] and b['sluice_lines_per_cpu_s'] / 1e6)} M lines per CPU-second; target >= 1)")
        ec = b["engine_cpu_s"]
        pm = b["engine_cpu_s_per_million"]
        side = " (read side only)" if b["mode"] == "backlog" else " (writing and serving the logs)"
        print(f"dockerd cpu  {fmt(ec.get('dockerd'))} s = {fmt(pm.get('dockerd'))} CPU-s per million lines{side}")
        print(f"shims cpu    {fmt(ec.get('shims'))} s (containerd-shim of the {r['containers']} containers), containerd {fmt(ec.get('containerd'))} s, generators {fmt(b.get('generators_cpu_s'))} s")
        if b.get("sluice_to_dockerd_cpu_ratio") is not None:
            print(f"ratio        sluice / dockerd CPU = {b['sluice_to_dockerd_cpu_ratio'] * 100:.1f}% (target <= 10%); sluice / (dockerd + shims) = {b['sluice_to_engine_cpu_ratio'] * 100:.1f}%")
            if w and w["engine_cpu_s"].get("dockerd"):
                both = w["engine_cpu_s"]["dockerd"] + ec["dockerd"]
                print(f"             sluice / dockerd's write + read CPU for the same lines = {b['sluice_cpu_s'] / both * 100:.1f}%")
        else:
            print("ratio        n/a: dockerd's /proc/<pid>/stat is not readable here")
        print(f"machine      {b['machine_busy_cpu_s']:.2f} busy CPU-s in the burst (all processes; this script: {b['harness_cpu_s']:.2f})")
    print(f"peak rss     {fmt(r.get('peak_rss_mib'), '.1f', ' MiB')}")
    if "rss_mib_no_container" in r:
        print(f"idle rss     no container followed: {r['rss_mib_no_container']:.1f} MiB")
    for key, when in (("idle_before", "before any line"), ("idle_after", "after the burst")):
        i = r.get(key)
        if i:
            ec = i["engine_cpu_s"]
            per = f", {i['rss_per_container_kib']:+.0f} KiB per container" if "rss_per_container_kib" in i else ""
            print(f"idle rss     {r['containers']} containers followed, quiet, {when}: {i['rss_mib']:.1f} MiB (anon {i['rss_anon_mib']:.1f}){per}; "
                  f"CPU over {i['seconds']:.0f} s: sluice {i['sluice_cpu_s']:.2f} s, dockerd {fmt(ec.get('dockerd'))} s")
    if "sent" in r:
        rec = r.get("received")
        print(f"check        sent {r['sent']} (expected {r['lines']})" + (f"; receiver decoded {rec['lines']} lines, labels {{{', '.join(rec['label_names'])}}}" if rec else "")
              + f"; docker source: {', '.join(f'{k} {v:g}' for k, v in r['docker_source'].items())}")
    for line in r.get("sluice_warnings", [])[:5]:
        print(f"sluice log   {line[:300]}")
    print("result       " + ("OK" if not r["failures"] else "FAILED: " + "; ".join(r["failures"])))


if __name__ == "__main__":
    sys.exit(main())
