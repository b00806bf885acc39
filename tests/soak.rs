//! The chaos soak: `watch` with 6 s tokens and a real app child, for 95 s (longer with
//! `DEVBOX_SOAK_SECONDS`; `bench/soak.sh` runs an hour), against a workspace that fails on a
//! seeded schedule — dropped and refused connections, 500s, 429s with `Retry-After`, 5 s stalls,
//! an outage longer than a token's life, a restart — while helper runs are SIGKILLed at random
//! moments. Every 100 ms it checks:
//!
//! - `config.json` and `token` give a credential the workspace accepts, except while a fault
//!   lasts (and a few seconds after, while a retry comes round); then `status` says so;
//! - this deployment never has more than 3 live tokens;
//! - no zombie stays under `watch`.
//!
//! And over the run: requests to the workspace per minute stay bounded, `watch` and its
//! children use at most 2% of a CPU, SIGTERM at the end reaches the app within 200 ms and
//! `watch` exits within 12 s, no live token of ours is missing from the state (or its mint
//! journal), and the next start leaves only what it serves.
//!
//! The same `DEVBOX_SOAK_SEED` replays the same schedule (the seed is printed).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Canned, Emulator, Run, api_key, signal, spawn_devbox_auth, wait_for};

const TOKEN_LIFE: Duration = Duration::from_secs(6);
/// How long after a fault ends a failed rotation is retried and done: a backoff step (at most
/// 3 s once the credential has expired) plus the run.
const RECOVERY: Duration = Duration::from_millis(4500);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Connections accepted and dropped.
    Drops,
    /// The workspace restarts: connections refused, open ones closed, then back.
    Restart,
    Errors500,
    /// 429 with `Retry-After: 1`.
    RateLimited,
    /// Every answer takes 5 s.
    Stalls,
    /// Connections dropped for longer than a token lives (and its grace).
    Outage,
}

impl Fault {
    const ALL: [Fault; 6] =
        [Fault::Drops, Fault::Restart, Fault::Errors500, Fault::RateLimited, Fault::Stalls, Fault::Outage];

    fn length(self, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_millis(match self {
            Fault::Drops | Fault::Restart => rng.u64(800..2000),
            Fault::Errors500 | Fault::RateLimited => rng.u64(1500..3000),
            Fault::Stalls => rng.u64(5000..6000),
            Fault::Outage => rng.u64(9000..11000),
        })
    }

    fn begin(self, emulator: &Emulator) {
        match self {
            Fault::Drops | Fault::Outage => emulator.set_down(true),
            Fault::Restart => emulator.stop_listening(),
            Fault::Errors500 => emulator.set_fault(Some(Canned::error(500, "INTERNAL_ERROR", "Something broke."))),
            Fault::RateLimited => emulator.set_fault(Some(
                Canned::error(429, "REQUEST_LIMIT_EXCEEDED", "Too many requests.").with_header("Retry-After", "1"),
            )),
            Fault::Stalls => emulator.set_latency(Duration::from_secs(5)),
        }
    }

    fn end(self, emulator: &Emulator) {
        match self {
            Fault::Drops | Fault::Outage => emulator.set_down(false),
            Fault::Restart => emulator.start_listening(),
            Fault::Errors500 | Fault::RateLimited => emulator.set_fault(None),
            Fault::Stalls => emulator.set_latency(Duration::ZERO),
        }
    }
}

/// A fault from `at` (since the start) for `length`.
#[derive(Debug, Clone, Copy)]
struct Window {
    at: Duration,
    length: Duration,
    fault: Fault,
}

/// The seeded schedule: quiet first, then every kind of fault in a shuffled cycle, each
/// followed by a quiet gap, ending quiet.
fn schedule(seed: u64, total: Duration) -> Vec<Window> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut windows = Vec::new();
    let mut at = Duration::from_secs(5);
    let mut cycle = Vec::new();
    loop {
        if cycle.is_empty() {
            cycle = Fault::ALL.to_vec();
            rng.shuffle(&mut cycle);
        }
        let fault = cycle.pop().unwrap();
        let length = fault.length(&mut rng);
        if at + length + Duration::from_secs(6) > total {
            return windows;
        }
        windows.push(Window { at, length, fault });
        at += length + Duration::from_millis(rng.u64(8000..10000));
    }
}

/// CPU time (user + system, children reaped included) of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let ticks: f64 = fields.get(11..15).into_iter().flatten().filter_map(|f| f.parse::<f64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn children_of(parent: u32) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(") ")?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.to_string();
            (fields.next()?.parse::<u32>().ok()? == parent).then_some((pid, state))
        })
        .collect()
}

/// Alive and not yet a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn watch_survives_a_chaos_schedule() {
    let seed: u64 = std::env::var("DEVBOX_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42);
    let total =
        Duration::from_secs(std::env::var("DEVBOX_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(95));
    let windows = schedule(seed, total);
    eprintln!("soak: seed {seed}, {} s, schedule {windows:?}", total.as_secs());
    assert!(Fault::ALL.iter().all(|f| windows.iter().any(|w| w.fault == *f)), "every fault kind is in the schedule");

    let emulator = Emulator::start();
    // A real workspace's round trip on every request. Without it a helper run is over in ~15 ms,
    // and whether the killer below lands inside one is luck (CI once saw 1 kill in 95 s).
    emulator.set_latency(Duration::from_millis(30));
    let run = Run::app(&emulator)
        .var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", &TOKEN_LIFE.as_secs().to_string())
        .var("DATABRICKS_APP_NAME", "devbox-soak");
    let marker = run.path("app-got-sigterm");
    let app = format!(
        "import signal, sys, time\ndef stop(*_):\n    open({:?}, 'w').write(repr(time.time()))\n    sys.exit(0)\nsignal.signal(signal.SIGTERM, stop)\nwhile True:\n    time.sleep(1)\n",
        marker.display().to_string()
    );
    std::fs::write(run.path("app.py"), app).unwrap();
    let app_path = run.path("app.py").display().to_string();
    let mut watch = spawn_devbox_auth(&run, &["watch", "--timeout", "2", "--", "python3", &app_path]);
    let watch_pid = watch.id();
    // Read what watch logs as it goes (as a log collector would), so an hour of it cannot fill
    // the pipe; kept for the report.
    let watch_log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log_reader = {
        let mut stderr = watch.stderr.take().unwrap();
        let log = watch_log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(&mut stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                if log.len() < 1 << 20 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        })
    };
    // Done when the state names what the config's key stands for (it is written after the files).
    wait_for("the first provision", Duration::from_secs(30), || {
        support::ccr_route(&run).is_some_and(|c| c.works(&emulator))
    });
    let started = Instant::now();
    let cpu_at_start = cpu_seconds(watch_pid);
    let done = AtomicBool::new(false);
    let kills = AtomicU32::new(0);
    let helpers = AtomicU32::new(0);

    let report = std::thread::scope(|scope| {
        // The fault schedule.
        scope.spawn(|| {
            for window in &windows {
                let wait = (started + window.at).saturating_duration_since(Instant::now());
                std::thread::sleep(wait);
                window.fault.begin(&emulator);
                std::thread::sleep(window.length);
                window.fault.end(&emulator);
            }
        });
        // SIGKILL every third helper run, at a random moment of it.
        scope.spawn(|| {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(Ordering::Relaxed) {
                for (pid, _) in children_of(watch_pid) {
                    if !seen.insert(pid) || !cmdline(pid).contains("devbox-auth") {
                        continue;
                    }
                    if !helpers.fetch_add(1, Ordering::Relaxed).is_multiple_of(3) {
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(rng.u64(0..40)));
                    // Counted only when it was still running (a zombie takes the signal too).
                    // SAFETY: kill(2) on a helper of the watch under test (if it is still there).
                    if is_running(pid) && unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                        kills.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(rng.u64(2..10)));
            }
        });
        // Set even when sampling panics: the scope waits for the killer, which would loop forever.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _done = Done(&done);
        sample(&run, &emulator, &windows, started, total, watch_pid)
    });

    // Requests per minute, over every 60 s window of the run.
    // devbox-auth's own requests: the model requests the sampler sends through the relay are not.
    let times: Vec<Instant> = emulator
        .requests()
        .iter()
        .filter(|r| r.at >= started && !r.path.starts_with("/serving-endpoints/"))
        .map(|r| r.at)
        .collect();
    let per_minute = times
        .iter()
        .map(|t| times.iter().filter(|u| **u >= *t && **u < *t + Duration::from_secs(60)).count())
        .max()
        .unwrap_or(0);
    let per_minute = per_minute as f64 * 60.0 / total.as_secs_f64().min(60.0);
    let mut by_path = std::collections::BTreeMap::<String, usize>::new();
    for request in emulator.requests().iter().filter(|r| r.at >= started) {
        *by_path
            .entry(format!("{} {}", request.method, request.path.split('?').next().unwrap_or_default()))
            .or_default() += 1;
    }
    eprintln!("soak: seed {seed}: requests after the first provision: {by_path:?}");
    let app_pid = children_of(watch_pid).into_iter().map(|(pid, _)| pid).find(|pid| cmdline(*pid).contains("app.py"));
    let cpu = cpu_seconds(watch_pid) - cpu_at_start + app_pid.map_or(0.0, cpu_seconds);
    let cpu_share = cpu / started.elapsed().as_secs_f64();

    // SIGTERM at the end of the schedule: the app has it within 200 ms, watch is gone in 12 s.
    let sent = now_secs();
    let stopping = Instant::now();
    signal(&watch, libc::SIGTERM);
    let got = support::sigterm_time(&marker);
    let mut out = support::finish(watch, Duration::from_secs(14), &emulator);
    let stop_took = stopping.elapsed();
    log_reader.join().unwrap();
    out.stderr = watch_log.lock().unwrap().clone();
    support::assert_no_secret("watch's log", &out.stderr, &emulator.secrets());
    let kills = kills.load(Ordering::Relaxed);
    let helpers = helpers.load(Ordering::Relaxed);
    eprintln!(
        "soak: seed {seed}: {} samples ({} through the relay), {} excused in faults, max {} live tokens, {per_minute:.0} requests/min, watch+children {:.2}% CPU, {kills} of {helpers} helper runs killed, SIGTERM reached the app in {:.0} ms, watch stopped in {:.1} s",
        report.samples,
        report.model_requests,
        report.excused,
        report.max_live,
        cpu_share * 100.0,
        (got - sent) * 1000.0,
        stop_took.as_secs_f64()
    );
    assert!(report.failures.is_empty(), "seed {seed}: {:#?}\nwatch said:\n{}", report.failures, out.stderr);
    assert!(report.max_live <= 3, "seed {seed}: {} live tokens at once", report.max_live);
    assert!(per_minute <= 300.0, "seed {seed}: {per_minute:.0} requests a minute");
    assert!(cpu_share <= 0.02, "seed {seed}: watch and its children used {:.2}% of a CPU", cpu_share * 100.0);
    assert!(kills >= 3, "seed {seed}: only {kills} of {helpers} helper runs were killed");
    assert!(got - sent <= 0.2, "seed {seed}: the app got SIGTERM {:.0} ms late", (got - sent) * 1000.0);
    assert!(stop_took <= Duration::from_secs(12), "seed {seed}: watch took {stop_took:?} to stop");
    assert_eq!(out.code, 0, "{}", out.stderr);

    support::assert_no_untracked_token(&run, &emulator);
    run.provision(&[]).success();
    support::assert_only_served_or_planned(&run, &emulator);
    assert!(emulator.accepts(&api_key(&run)));
}

#[derive(Debug, Default)]
struct Report {
    samples: u32,
    excused: u32,
    max_live: usize,
    /// Sent through the CCR's route (the relay), not counted in requests per minute.
    model_requests: u32,
    failures: Vec<String>,
}

/// Sample every 100 ms until `total` has passed since `started`.
fn sample(
    run: &Run,
    emulator: &Emulator,
    windows: &[Window],
    started: Instant,
    total: Duration,
    watch_pid: u32,
) -> Report {
    let mut report = Report::default();
    let mut zombies_before = Vec::new();
    let mut status_checked_in: Option<usize> = None;
    let mut reported = Duration::ZERO;
    let mut shown = 0;
    while started.elapsed() < total {
        let tick = Instant::now();
        let t = started.elapsed();
        if t >= reported + Duration::from_secs(300) {
            reported = t;
            eprintln!("soak: {} s: {} samples, {} failures so far", t.as_secs(), report.samples, report.failures.len());
            // What went wrong since the last line, so that a long run that fails later (or is
            // cut short) still shows it.
            for failure in &report.failures[shown..] {
                eprintln!("soak: failure: {}", failure.lines().next().unwrap_or_default());
            }
            shown = report.failures.len();
        }
        report.samples += 1;
        // Within a fault, or soon after it: a credential may run out, and status must say so.
        let fault =
            windows.iter().position(|w| t + Duration::from_millis(100) >= w.at && t <= w.at + w.length + RECOVERY);
        let config = support::ccr_route(run);
        let mut config_ok = config.as_ref().is_some_and(|c| c.works(emulator));
        if config.is_none() {
            report.failures.push(format!("{t:?}: config.json was not whole"));
        }
        // Every tenth sample, a model request as CCR sends it (through watch's credential relay).
        if let Some(ccr) = config.as_ref().filter(|_| report.samples % 10 == 0) {
            let status = support::post_status(&ccr.url, Some(&ccr.key));
            report.model_requests += 1;
            config_ok &= status == 200;
        }
        let token = support::token(run, &["--timeout", "1"]);
        let token_ok = token.code == 0 && emulator.accepts(token.stdout.trim_end());
        if token.code == 0 && !token_ok {
            // Never, fault or not: it refuses to print a token in its last moments.
            report.failures.push(format!("{t:?}: token printed a credential the workspace refuses"));
        }
        match (config_ok && token_ok, fault) {
            (true, _) => {}
            (false, None) => report.failures.push(format!(
                "{t:?}: no usable credential outside any fault (config.json: {config_ok}, token: {token_ok}: {})",
                token.stderr.trim()
            )),
            (false, Some(window)) => {
                report.excused += 1;
                // Once per fault: status reports what is wrong.
                if status_checked_in != Some(window) && !config_ok {
                    status_checked_in = Some(window);
                    let status = support::devbox_auth(run, &["status"]);
                    // Unless a rotation (the `token` call above may run one) fixed it meanwhile.
                    let still_dead = !support::ccr_route(run).is_some_and(|c| c.works(emulator));
                    if status.code == 0 && !status.stdout.contains("warning:") && still_dead {
                        report
                            .failures
                            .push(format!("{t:?}: the credential is dead but status says healthy:\n{}", status.stdout));
                    }
                }
            }
        }
        let live = emulator.live_marked_tokens().len();
        report.max_live = report.max_live.max(live);
        let zombies: Vec<u32> = children_of(watch_pid).into_iter().filter(|(_, s)| s == "Z").map(|(p, _)| p).collect();
        if let Some(stuck) = zombies.iter().find(|p| zombies_before.contains(*p)) {
            report.failures.push(format!("{t:?}: process {stuck} stays a zombie under watch"));
        }
        zombies_before = zombies;
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    report
}
