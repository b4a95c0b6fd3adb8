//! A log generator for the tests' containers: compiled by the harness as a static binary and
//! imported as an image (`docker import`), since no image can be pulled.
//!
//! Writes JSON lines `{"run":R,"seq":N,"name":"...","msg":"..."}` where `run` is the process
//! start time in nanoseconds (a restarted container's lines differ from its first run's).
//! Flags: --lines N, --stderr-every K (every K-th line to stderr), --size BYTES (message size),
//! --long BYTES (one line of that size, alone), --rate LINES_PER_SEC (0: as fast as possible),
//! --name NAME, --then-sleep SECONDS, --forever (keep writing until killed).
#![allow(clippy::all)]
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let num = |flag: &str, default: u64| get(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    let lines = num("--lines", 10);
    let stderr_every = num("--stderr-every", 0);
    let size = num("--size", 40) as usize;
    let long = num("--long", 0) as usize;
    let rate = num("--rate", 0);
    let sleep = num("--then-sleep", 0);
    let forever = args.iter().any(|a| a == "--forever");
    let name = get("--name").unwrap_or_else(|| "loggen".into());
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut err = stderr.lock();
    if long > 0 {
        let line = format!("{{\"run\":{run},\"seq\":0,\"name\":\"{name}\",\"msg\":\"{}\"}}\n", "x".repeat(long));
        out.write_all(line.as_bytes()).unwrap();
        out.flush().unwrap();
    }
    let started = std::time::Instant::now();
    let padding = "p".repeat(size);
    let mut seq = 0u64;
    while forever || seq < lines {
        let line = format!("{{\"run\":{run},\"seq\":{seq},\"name\":\"{name}\",\"msg\":\"{padding}\"}}\n");
        if stderr_every > 0 && seq % stderr_every == stderr_every - 1 {
            out.flush().unwrap();
            err.write_all(line.as_bytes()).unwrap();
        } else {
            out.write_all(line.as_bytes()).unwrap();
        }
        seq += 1;
        if rate > 0 {
            out.flush().unwrap();
            let due = std::time::Duration::from_secs_f64(seq as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    out.flush().unwrap();
    drop(out);
    std::thread::sleep(std::time::Duration::from_secs(sleep));
}
