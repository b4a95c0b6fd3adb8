//! The Docker benchmark's log generator (scripts/bench/docker.py compiles it as a static binary
//! and imports it as an image, as tests/support/docker.rs does with loggen.rs).
//!
//! Writes `--lines N` JSON lines of ~250 bytes shaped like the platform's structured logs (the
//! same fields, services and level mix as gen_workload.py; WARN and ERROR on stderr), as fast as
//! it can, then sleeps until killed (`--then-sleep`) or exits.
//!
//! Flags: --lines N, --seed S, --wait-for PATH (poll every 5 ms until PATH exists, so that every
//! container starts writing at the same moment), --done-file PATH (created once every line is
//! written), --then-sleep (sleep forever after the last line).
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SERVICES: [&str; 8] = ["gateway", "auth", "billing", "search", "chat", "inventory", "notifier", "profile"];
const ROUTES: [&str; 5] = ["/api/v1/chat", "/api/v1/users/me", "/api/v1/search", "/api/v2/orders", "/healthz"];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in milliseconds since the epoch.
fn rfc3339_millis(ms: u64, out: &mut String) {
    use std::fmt::Write;
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let _ = write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let lines: u64 = get("--lines").and_then(|v| v.parse().ok()).unwrap_or(10);
    let seed: u64 = get("--seed").and_then(|v| v.parse().ok()).unwrap_or(7);
    let then_sleep = args.iter().any(|a| a == "--then-sleep");
    if let Some(path) = get("--wait-for") {
        while !std::path::Path::new(&path).exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut err = std::io::BufWriter::with_capacity(1 << 16, stderr.lock());
    let mut line = String::with_capacity(512);
    let mut ts = String::with_capacity(32);
    for _ in 0..lines {
        use std::fmt::Write as _;
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        ts.clear();
        rfc3339_millis(ms, &mut ts);
        let service = SERVICES[rng.below(8) as usize];
        // 15% DEBUG, 70% INFO, 10% WARN, 5% ERROR
        let (level, message, status) = match rng.below(100) {
            0..=14 => ("DEBUG", ["cache lookup", "upstream selected"][rng.below(2) as usize], 200),
            15..=84 => ("INFO", ["request completed", "job finished"][rng.below(2) as usize], 200),
            85..=94 => ("WARN", ["slow request", "retrying upstream call"][rng.below(2) as usize], [429, 500, 503][rng.below(3) as usize]),
            _ => ("ERROR", ["upstream timeout", "database connection refused"][rng.below(2) as usize], [429, 500, 503][rng.below(3) as usize]),
        };
        let duration = -rng.unit().ln() * 40.0;
        line.clear();
        let _ = writeln!(
            line,
            r#"{{"timestamp":"{ts}","level":"{level}","service":"{service}","logger":"{service}.http","message":"{message}","trace_id":"{:016x}{:016x}","span_id":"{:016x}","method":"{}","path":"{}","status":{status},"duration_ms":{duration:.3},"user_id":"u-{}"}}"#,
            rng.next(),
            rng.next(),
            rng.next(),
            METHODS[rng.below(4) as usize],
            ROUTES[rng.below(5) as usize],
            rng.below(100_000),
        );
        let w: &mut dyn Write = if level == "WARN" || level == "ERROR" { &mut err } else { &mut out };
        if w.write_all(line.as_bytes()).is_err() {
            std::process::exit(1);
        }
    }
    let _ = out.flush();
    let _ = err.flush();
    drop(out);
    drop(err);
    if let Some(path) = get("--done-file") {
        let _ = std::fs::write(path, b"");
    }
    if then_sleep {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
