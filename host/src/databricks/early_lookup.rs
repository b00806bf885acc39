//! The workspace's name looked up as soon as it is known, on a thread of its own, while the
//! run takes its home lock, reads its state and loads the policy: the first connection then
//! finds the addresses there instead of starting the lookup itself (about 0.5 ms on loopback,
//! a resolver round trip on a real network, on every start's critical path).
//!
//! Only that first answer is used. Every later lookup, and any lookup of another name (a
//! proxy's), asks the system as reqwest's own resolver does, so a `watch` running for days
//! follows the workspace's DNS.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::oneshot;

type Lookup = io::Result<Vec<SocketAddr>>;

pub struct EarlyLookup {
    host: String,
    /// The answer of the lookup started with this resolver, until the first connection takes it.
    first: Mutex<Option<oneshot::Receiver<Lookup>>>,
}

impl EarlyLookup {
    /// Start looking `host` up now. Where no thread can be started, the first connection looks
    /// it up itself, as every later one does.
    pub fn start(host: &str) -> Self {
        let (answer, first) = oneshot::channel();
        let name = host.to_string();
        let started =
            std::thread::Builder::new().name("dns".into()).spawn(move || answer.send(system_lookup(&name))).is_ok();
        Self { host: host.to_string(), first: Mutex::new(started.then_some(first)) }
    }
}

/// What reqwest's default resolver does: `getaddrinfo` with port 0 (the connector sets the port).
fn system_lookup(host: &str) -> Lookup {
    (host, 0).to_socket_addrs().map(Iterator::collect)
}

impl Resolve for EarlyLookup {
    fn resolve(&self, name: Name) -> Resolving {
        let early = match name.as_str() == self.host {
            true => self.first.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take(),
            false => None,
        };
        let host = name.as_str().to_string();
        Box::pin(async move {
            let answer = match early {
                Some(first) => match first.await {
                    Ok(answer) => answer,
                    // The thread ended without answering (it cannot, short of a panic): ask again.
                    Err(_) => blocking_lookup(host).await,
                },
                None => blocking_lookup(host).await,
            };
            Ok(Box::new(answer?.into_iter()) as Addrs)
        })
    }
}

async fn blocking_lookup(host: String) -> Lookup {
    tokio::task::spawn_blocking(move || system_lookup(&host)).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn resolve(lookup: &EarlyLookup, name: &str) -> Result<Vec<SocketAddr>, String> {
        let name: Name = name.parse().unwrap();
        lookup.resolve(name).await.map(Iterator::collect).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn the_early_answer_serves_the_first_lookup_of_its_name_only() {
        let lookup = EarlyLookup::start("localhost");
        assert!(lookup.first.lock().unwrap().is_some(), "the early lookup started");
        let first = resolve(&lookup, "localhost").await.unwrap();
        assert!(first.iter().any(|a| a.ip().is_loopback()), "{first:?}");
        assert!(lookup.first.lock().unwrap().is_none(), "the first connection took the early answer");
        // Later lookups (and other names) ask the system again.
        assert!(resolve(&lookup, "localhost").await.unwrap().iter().any(|a| a.ip().is_loopback()));
        assert!(resolve(&lookup, "127.0.0.1").await.unwrap().iter().any(|a| a.ip().is_loopback()));
    }
}
