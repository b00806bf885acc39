//! `devbox-emulator`: serve the workspace emulation on 127.0.0.1 until SIGTERM/SIGINT, as a
//! separate process that benchmarks point devbox-auth (and the Python original) at. Prints
//! `url=<base URL>` on the first line of stdout.

fn main() {
    let emulator = devbox_emulator::Emulator::start();
    println!("url={}", emulator.url);
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
    let requests = emulator.requests().len();
    eprintln!("devbox-emulator: served {requests} requests");
}
