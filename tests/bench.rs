//! Start-up benchmark: wall time and peak RSS of the real binary, per scenario, as medians over
//! repeated runs against the loopback Databricks emulator. Ignored by the test run; run it with
//! `scripts/bench.sh` (DEVBOX_BENCH_RUNS sets the repetitions, default 25).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Emulator, Run};

/// Run the binary once; return its wall time and its own peak RSS in KiB (from wait4).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also reports its peak RSS
fn measure(run: &Run, args: &[&str]) -> (Duration, i64) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .args(args)
        .env_clear()
        .envs(&run.env)
        .current_dir(run.home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite; the pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(pid, child.id() as i32);
    assert_eq!(status, 0, "devbox-auth {args:?} failed");
    (elapsed, usage.ru_maxrss)
}

fn median<T: Copy + Ord>(mut values: Vec<T>) -> T {
    values.sort();
    values[values.len() / 2]
}

#[test]
#[ignore = "benchmark: run scripts/bench.sh"]
fn startup() {
    let runs: usize = std::env::var("DEVBOX_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
    let emulator = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap().to_string();
    let scenarios: [(&str, Vec<&str>, &str); 3] = [
        ("provision, OAuth M2M, loopback workspace, warm policy cache", vec!["provision"], cache.as_str()),
        ("provision --dry-run, warm policy cache", vec!["provision", "--dry-run"], cache.as_str()),
        ("provision --dry-run, no policy cache (compile every start)", vec!["provision", "--dry-run"], "off"),
    ];
    println!(
        "{runs} runs per scenario on {} cores; medians:",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("{:<62} {:>10} {:>14}", "scenario", "wall", "peak RSS");
    for (name, args, cache_dir) in scenarios {
        let run = Run::app(&emulator).var("DEVBOX_AUTH_CACHE_DIR", cache_dir);
        measure(&run, &args); // warm the cache and the page cache
        let samples: Vec<(Duration, i64)> = (0..runs).map(|_| measure(&run, &args)).collect();
        let wall = median(samples.iter().map(|s| s.0).collect());
        let rss_kib = median(samples.iter().map(|s| s.1).collect());
        println!("{name:<62} {:>8.1} ms {:>10.1} MiB", wall.as_secs_f64() * 1000.0, rss_kib as f64 / 1024.0);
        if name.starts_with("provision, OAuth") {
            // The Python original, measured the same way (seed-behavior.md): ~1.7 s, ~83 MiB.
            println!(
                "{:<62} {:>8.0}x {:>13.1}x",
                "  vs the Python original (1.7 s, 83 MiB)",
                1.7 / wall.as_secs_f64(),
                83.0 * 1024.0 / rss_kib as f64
            );
        }
    }
}
