//! Reaping orphans when `watch` runs as PID 1 (a container whose start command it is): the
//! kernel hands every orphaned process to PID 1, and a daemon the app double-forked would
//! otherwise stay a zombie once it exits. Only zombies that are not `watch`'s own children
//! (which tokio reaps, and whose exit status `watch` needs) are collected.

use std::collections::BTreeSet;

/// Whether this process must reap orphans.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Reap every zombie child of this process whose pid is not in `own`.
pub fn reap_orphans(own: &BTreeSet<u32>) -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if own.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ") " ends it.
        let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else { continue };
        if state == "Z" && ppid.parse::<u32>() == Ok(me) {
            // SAFETY: waitpid on a zombie child that is not one tokio tracks; WNOHANG never blocks.
            if unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) } == pid as i32 {
                reaped += 1;
            }
        }
    }
    reaped
}
