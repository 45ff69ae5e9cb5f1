//! Which agents: the configured URLs, and every address of the agents'
//! headless Service (`agents.dns`), resolved again every
//! `agents.resolve_every`. Each agent gets its own sync task
//! ([`crate::sync::run_agent`]); an address that leaves the DNS answer is
//! copied from while it still answers, then no longer tried (the node is
//! gone; what was copied stays).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
};

use tokio::sync::watch;

use crate::sync::{run_agent, Console};

/// The URL of an agent found at `addr`.
pub fn url_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("https://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
    }
}

/// Runs until `stop`: starts a task per agent, static and discovered.
pub async fn run(con: Arc<Console>, mut stop: watch::Receiver<bool>) {
    let mut tasks: HashMap<String, Task> = HashMap::new();
    let start = |con: &Arc<Console>, url: &str, source: &str, tasks: &mut HashMap<_, _>| {
        con.register(url, source);
        let (tx, rx) = watch::channel(false);
        let departed = Arc::new(AtomicBool::new(false));
        let h = tokio::spawn(run_agent(con.clone(), url.to_owned(), rx, departed.clone()));
        tasks.insert(
            url.to_owned(),
            Task {
                stop: tx,
                handle: h,
                departed,
            },
        );
    };
    for url in &con.cfg.agents.urls {
        start(&con, url, "static", &mut tasks);
    }
    let statics: HashSet<String> = con.cfg.agents.urls.iter().cloned().collect();
    let names = con.cfg.agents.dns.clone();
    let port = con.cfg.agents.dns_port;
    let mut tick = tokio::time::interval(con.cfg.agents.resolve_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !names.is_empty() {
            let mut found: HashMap<String, String> = HashMap::new();
            let mut failed = false;
            for name in &names {
                match tokio::net::lookup_host((name.as_str(), port)).await {
                    Ok(addrs) => {
                        for a in addrs {
                            found.insert(url_of(a), format!("dns:{name}"));
                        }
                    }
                    Err(e) => {
                        // A failed lookup keeps what was found before.
                        failed = true;
                        tracing::warn!(%name, error = %e, "resolving agents failed");
                    }
                }
            }
            // Tasks that ended (departed and unreachable) are forgotten: a
            // later answer with the address starts a new one.
            tasks.retain(|_, t| !t.handle.is_finished());
            for (url, source) in &found {
                match tasks.get(url) {
                    Some(t) => t.departed.store(false, Relaxed),
                    None => {
                        tracing::info!(%url, %source, "agent discovered");
                        start(&con, url, source, &mut tasks);
                    }
                }
            }
            if !failed {
                for (url, t) in &tasks {
                    if !statics.contains(url)
                        && !found.contains_key(url)
                        && !t.departed.swap(true, Relaxed)
                    {
                        // Still copied while it answers: a terminating
                        // agent's last incidents are the ones wanted most.
                        tracing::info!(%url, "agent left the DNS answer: copied until it stops answering");
                    }
                }
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
    }
    for (_, t) in tasks {
        let _ = t.stop.send(true);
        let _ = t.handle.await;
    }
}

struct Task {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    departed: Arc<AtomicBool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_addresses() {
        assert_eq!(
            url_of("10.0.0.7:7070".parse().unwrap()),
            "https://10.0.0.7:7070"
        );
        assert_eq!(
            url_of("[fd00::7]:7070".parse().unwrap()),
            "https://[fd00::7]:7070"
        );
    }
}
