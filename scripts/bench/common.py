"""Helpers shared by the benchmark scripts (scripts/bench/*.py): a null Loki receiver, sluice's
/metrics, process CPU and memory from /proc, starting sluice on an ephemeral port, and a
pure-Python decoder of Loki pushes (snappy block format + protobuf) to check what was received.

The process helpers follow e2e.py's conventions (utime+stime from /proc/<pid>/stat, VmHWM from
/proc/<pid>/status, the `http=` address of the "sluice started" log line).
"""
import http.server
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path


# --- null Loki ---------------------------------------------------------------------------------

class NullLoki(http.server.BaseHTTPRequestHandler):
    """Accepts every push: reads the body and answers 204, keeping the connection open as Loki
    does (HTTP/1.1: no TCP connect per push in sluice's CPU). With `keep` set (a binary file
    object), every body is appended to it, length-prefixed, for decoding after the run."""

    protocol_version = "HTTP/1.1"

    pushes = 0
    body_bytes = 0
    keep = None
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with NullLoki.lock:
            NullLoki.pushes += 1
            NullLoki.body_bytes += length
            if NullLoki.keep is not None:
                NullLoki.keep.write(len(body).to_bytes(4, "little"))
                NullLoki.keep.write(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def start_null_loki(keep=None) -> http.server.ThreadingHTTPServer:
    """A null Loki on 127.0.0.1:<ephemeral port>, served from a daemon thread."""
    NullLoki.keep = keep
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NullLoki)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def kept_bodies(path):
    """The bodies a NullLoki with `keep` wrote to `path`."""
    data = Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        yield data[pos + 4:pos + 4 + n]
        pos += 4 + n


# --- sluice ------------------------------------------------------------------------------------

def metric_sum(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def metric_samples(text: str, name: str):
    """[(labels dict, value)] of a metric."""
    out = []
    for m in re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        out.append((dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or "")), float(m.group(2))))
    return out


class Sluice:
    """`sluice run --config FILE`, started and waited for until it listens; stderr is drained
    (and kept, last lines only) by a thread."""

    def __init__(self, binary: str, config: Path):
        self.proc = subprocess.Popen([binary, "run", "--config", str(config)], stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.tail = []
        self.warnings = []  # its WARN and ERROR log lines (the first 100)
        self.port = None
        while self.port is None:
            line = self.proc.stderr.readline()
            if not line:
                raise SystemExit("sluice exited before it listened:\n" + "".join(self.tail))
            self.tail.append(line)
            if '"sluice started"' in line:
                self.port = int(re.search(r'"http":"[^"]*:(\d+)"', line).group(1))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.tail.append(line)
            if len(self.warnings) < 100 and re.search(r'"level":"(WARN|ERROR)"', line):
                self.warnings.append(line.strip())
            del self.tail[:-200]

    def metrics(self) -> str:
        if self.proc.poll() is not None:
            raise SystemExit(f"sluice exited with {self.proc.returncode}:\n" + "".join(self.tail[-20:]))
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def refuse_debug_binary(path: str) -> str:
    """The resolved path of a sluice binary built with a release-like profile; exits for a
    debug build (target/debug/...), whose figures would be meaningless."""
    resolved = Path(path).resolve()
    if not resolved.exists():
        raise SystemExit(f"{path}: no such binary (build it: cargo build --release --bin sluice)")
    if "debug" in resolved.parts:
        raise SystemExit(f"{resolved} is a debug build: figures need a release build (cargo build --release --bin sluice)")
    return str(resolved)


# --- /proc -------------------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def proc_cpu_split(pid: int):
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def proc_status_kib(pid: int, key: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS, VmHWM, RssAnon, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def proc_peak_rss_mib(pid: int) -> float:
    return proc_status_kib(pid, "VmHWM") / 1024


def proc_rss_mib(pid: int) -> float:
    return proc_status_kib(pid, "VmRSS") / 1024


def system_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (all cores) from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / TICKS


def pids_of(name: str):
    """The pids whose comm is `name` (as pidof)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def cmdline(pid: int) -> list:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


# --- Loki push decoding (snappy block + protobuf), pure Python ---------------------------------

def _varint(data, pos):
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def snappy_decompress(data: bytes) -> bytes:
    """Snappy's block format (what Loki's push API takes)."""
    expected, pos = _varint(data, 0)
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            out += data[pos:pos + n]
            pos += n
            continue
        if kind == 1:
            n = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            n = 1 + (tag >> 2)
            offset = data[pos] | (data[pos + 1] << 8)
            pos += 2
        else:
            n = 1 + (tag >> 2)
            offset = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        start = len(out) - offset
        if offset <= 0 or start < 0:
            raise ValueError("snappy: bad copy offset")
        if offset >= n:
            out += out[start:start + n]
        else:  # overlapping copy: the last `offset` bytes repeated
            pattern = bytes(out[start:])
            out += (pattern * (n // offset + 1))[:n]
    if len(out) != expected:
        raise ValueError(f"snappy: {len(out)} bytes decoded, {expected} announced")
    return bytes(out)


def _fields(data, pos, end):
    """(field number, wire type, value or (start, end)) of a protobuf message."""
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            n, pos = _varint(data, pos)
            yield number, wire, (pos, pos + n)
            pos += n
        elif wire == 1:
            yield number, wire, data[pos:pos + 8]
            pos += 8
        elif wire == 5:
            yield number, wire, data[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"protobuf: wire type {wire}")


def decode_push(body: bytes, first_entries: bool = False):
    """[(labels string, entry count, first entry or None)] of a PushRequest (snappy-compressed).
    A first entry is (line bytes, {metadata name: value})."""
    data = snappy_decompress(body)
    streams = []
    for number, wire, span in _fields(data, 0, len(data)):
        if number != 1 or wire != 2:
            continue
        labels, count, first = "", 0, None
        for n2, w2, v2 in _fields(data, span[0], span[1]):
            if n2 == 1 and w2 == 2:
                labels = data[v2[0]:v2[1]].decode()
            elif n2 == 2 and w2 == 2:
                count += 1
                if first_entries and first is None:
                    line, meta = b"", {}
                    for n3, w3, v3 in _fields(data, v2[0], v2[1]):
                        if n3 == 2 and w3 == 2:
                            line = data[v3[0]:v3[1]]
                        elif n3 == 3 and w3 == 2:
                            pair = {n4: data[v4[0]:v4[1]].decode() for n4, w4, v4 in _fields(data, v3[0], v3[1]) if w4 == 2}
                            meta[pair.get(1, "")] = pair.get(2, "")
                    first = (line, meta)
        streams.append((labels, count, first))
    return streams


def parse_labels(text: str) -> dict:
    """`{a="x", b="y"}` as a dict."""
    return {k: bytes(v, "utf-8").decode("unicode_escape") for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text)}


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
