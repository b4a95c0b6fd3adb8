#!/usr/bin/env python3
"""Writes the benchmark workload: container log lines whose payload is a ~250-byte JSON object
from a structured logger (8 services, 4 levels, WARN/ERROR on stderr: 32 label streams), in
Docker's json-file format or in the CRI format the kubelet writes.

usage: gen_workload.py OUT [--lines N] [--format docker|cri] [--seed S]

Timestamps start three hours ago and run forward over one hour, so that Loki's
reject_old_samples_max_age (7 days) accepts them for days.
"""
import argparse
import json
import random
import time

SERVICES = ["gateway", "auth", "billing", "search", "chat", "inventory", "notifier", "profile"]
LEVELS = ["DEBUG"] * 15 + ["INFO"] * 70 + ["WARN"] * 10 + ["ERROR"] * 5
MESSAGES = {
    "DEBUG": ["cache lookup", "upstream selected"],
    "INFO": ["request completed", "job finished"],
    "WARN": ["slow request", "retrying upstream call"],
    "ERROR": ["upstream timeout", "database connection refused"],
}
ROUTES = ["/api/v1/chat", "/api/v1/users/me", "/api/v1/search", "/api/v2/orders", "/healthz"]
METHODS = ["GET", "GET", "POST", "PUT"]


def rfc3339(ns: int, digits: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + "." + f"{frac:09d}"[:digits] + "Z"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--format", choices=["docker", "cri"], default="docker")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    start = time.time_ns() - 3 * 3600 * 1_000_000_000
    step = 3600 * 1_000_000_000 // args.lines
    compact = (",", ":")
    written = 0
    with open(args.out, "w", buffering=1 << 20) as f:
        for i in range(args.lines):
            ns = start + i * step + rnd.randrange(max(step, 1))
            service = rnd.choice(SERVICES)
            level = rnd.choice(LEVELS)
            payload = json.dumps(
                {
                    "timestamp": rfc3339(ns, 3),
                    "level": level,
                    "service": service,
                    "logger": f"{service}.http",
                    "message": rnd.choice(MESSAGES[level]),
                    "trace_id": f"{rnd.getrandbits(128):032x}",
                    "span_id": f"{rnd.getrandbits(64):016x}",
                    "method": rnd.choice(METHODS),
                    "path": rnd.choice(ROUTES),
                    "status": 200 if level in ("DEBUG", "INFO") else rnd.choice([429, 500, 503]),
                    "duration_ms": round(rnd.expovariate(1 / 40.0), 3),
                    "user_id": f"u-{rnd.randrange(100000)}",
                },
                separators=compact,
            )
            stream = "stderr" if level in ("WARN", "ERROR") else "stdout"
            if args.format == "docker":
                line = json.dumps({"log": payload + "\n", "stream": stream, "time": rfc3339(ns, 9)}, separators=compact)
            else:
                line = f"{rfc3339(ns, 9)} {stream} F {payload}"
            f.write(line)
            f.write("\n")
            written += len(line) + 1
    print(f"{args.lines} lines, {written} bytes ({written / args.lines:.0f} B/line): {args.out}")


if __name__ == "__main__":
    main()
