//! `devbox-emulator`: serve the workspace emulation on 127.0.0.1 until SIGTERM/SIGINT, as a
//! separate process that benchmarks point devbox-auth (and the Python original) at. Prints
//! `url=<base URL>` on the first line of stdout, and with `--tls` `ca=<PEM file>` on the second.
//!
//!     devbox-emulator [--latency-ms N] [--tls]
//!
//! `--latency-ms` delays every answer by N ms (a round trip to a real workspace); `--tls` serves
//! HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a throwaway CA, written to a file for
//! `SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`. `GET /__emulator/requests` answers how many requests
//! it has served, so a benchmark can count what each run asked.

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut latency_ms, mut tls) = (0u64, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--latency-ms" => latency_ms = args.next().and_then(|v| v.parse().ok()).expect("--latency-ms N"),
            "--tls" => tls = true,
            other => panic!("unknown argument {other}; usage: devbox-emulator [--latency-ms N] [--tls]"),
        }
    }
    let emulator = if tls { devbox_emulator::Emulator::start_tls() } else { devbox_emulator::Emulator::start() };
    emulator.set_latency(std::time::Duration::from_millis(latency_ms));
    println!("url={}", emulator.url);
    if let Some(pem) = &emulator.ca_pem {
        let path = std::env::temp_dir().join(format!("devbox-emulator-ca-{}.pem", emulator.port));
        std::fs::write(&path, pem).expect("write the CA file");
        println!("ca={}", path.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    // The CA file goes with the emulator (it only ever vouched for this process's certificate).
    if emulator.ca_pem.is_some() {
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("devbox-emulator-ca-{}.pem", emulator.port)));
    }
    let requests = emulator.requests().len();
    eprintln!("devbox-emulator: served {requests} requests");
}
