//! systemd's service notification protocol (`sd_notify(3)`) without
//! libsystemd: a datagram of `KEY=value` lines to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
//! `@`), and the watchdog's period from `$WATCHDOG_USEC`.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    time::{Duration, Instant},
};

/// Sends notifications to the service manager.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`; `None` when it is not set (not
    /// run by systemd, or not `Type=notify`).
    pub fn from_env() -> Option<io::Result<Notifier>> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_str()?;
        (!name.is_empty()).then(|| Notifier::new(name))
    }

    /// A notifier of socket `name`: a path, or `@name` for an abstract
    /// socket.
    pub fn new(name: &str) -> io::Result<Notifier> {
        let addr = match name.strip_prefix('@') {
            Some(abs) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abs.as_bytes())?
            }
            None => SocketAddr::from_pathname(name)?,
        };
        let sock = UnixDatagram::unbound()?;
        Ok(Notifier { sock, addr })
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) in one
    /// datagram. Never blocks: the manager reads them as they come.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock.set_nonblocking(true)?;
        let n = self.sock.send_to_addr(state.as_bytes(), &self.addr)?;
        if n != state.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
        }
        Ok(())
    }

    /// [`Notifier::notify`], a failure logged (never fatal: the manager
    /// notices a missing notification by itself).
    pub fn send(&self, state: &str) {
        if let Err(err) = self.notify(state) {
            tracing::warn!(%err, state, "notifying the service manager");
        }
    }
}

/// `RELOADING=1` with the time of the reload's start, as systemd wants it
/// (`MONOTONIC_USEC`: `CLOCK_MONOTONIC` in µs).
pub fn reloading_message() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = (ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as u64 / 1000);
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is
/// set for this process (`$WATCHDOG_PID`, when set, names it).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_of(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_of(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(own) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// Decides, at each watchdog tick, whether the pipeline still advances:
/// its step counter grows (at least once a second while it runs: its
/// housekeeping), so a counter that has not moved for longer than the
/// tolerance is a pipeline stuck in a step, and the watchdog is no longer
/// fed (systemd then restarts the agent).
#[derive(Debug)]
pub struct Watchdog {
    last_steps: u64,
    last_advance: Instant,
    tolerance: Duration,
}

impl Watchdog {
    /// For a tick every `interval`: a stall longer than `interval` (and
    /// than 3 s, three housekeeping periods) stops the feeding.
    pub fn new(interval: Duration, steps: u64, now: Instant) -> Watchdog {
        Watchdog {
            last_steps: steps,
            last_advance: now,
            tolerance: interval.max(Duration::from_secs(3)),
        }
    }

    /// Whether to send `WATCHDOG=1` now, the pipeline having made `steps`
    /// steps so far.
    pub fn feed(&mut self, steps: u64, now: Instant) -> bool {
        if steps != self.last_steps {
            self.last_steps = steps;
            self.last_advance = now;
        }
        now.saturating_duration_since(self.last_advance) <= self.tolerance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("fdr-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=recording").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=recording");
        let msg = reloading_message();
        n.notify(&msg).unwrap();
        let got = recv(&server);
        assert!(got.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{got}");
        let usec: u64 = got.rsplit('=').next().unwrap().parse().unwrap();
        assert!(usec > 0);
        n.notify("STOPPING=1").unwrap();
        assert_eq!(recv(&server), "STOPPING=1");
        drop(server);
        // Nobody listening: an error, never a hang or a panic.
        assert!(n.notify("WATCHDOG=1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("fdr-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.notify("WATCHDOG=1").unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn watchdog_interval_is_half_the_period_for_this_process() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_of(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval_of(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval_of(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_of(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_of(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval_of(None, None, 7), None);
    }

    #[test]
    fn the_watchdog_is_fed_only_while_the_pipeline_advances() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = Watchdog::new(s, 10, t0);
        assert!(w.feed(11, t0 + s));
        // An idle second without a step is within the tolerance.
        assert!(w.feed(11, t0 + 2 * s));
        assert!(w.feed(12, t0 + 3 * s));
        // Stuck: no step for longer than the tolerance.
        assert!(w.feed(12, t0 + 6 * s));
        assert!(!w.feed(12, t0 + 7 * s));
        // Moving again: fed again.
        assert!(w.feed(13, t0 + 8 * s));
    }
}
