//! The agent's health as `grpc.health.v1` (the `tonic-health` service), for
//! the kubelet's gRPC probes, load balancers and `grpc_health_probe`.
//!
//! Served on the API's unix socket, on its TCP listener (without the bearer
//! token: probes carry no credentials; over TLS when TLS is configured) and
//! on the plaintext `[health] listen` listener, which serves nothing else.
//!
//! Two service names, always with the same status: `""` (the agent) and
//! `fdr.v1.FlightRecorder`. NOT_SERVING until the probes are attached and
//! the pipeline has finished its first step; SERVING then; NOT_SERVING again
//! while the pipeline has not finished a step for `[health] stall_after`
//! (and after shutdown begins).
//!
//! What "stalled while events are pending" means here: the pipeline task
//! wakes at least once a second on its own (its housekeeping timer), idle or
//! not, and every wake-up drains the kernel rings; its steps are counted
//! ([`crate::util::stats::Counters::pipeline_steps`], one relaxed add per
//! step, nothing more on the event path). So while the agent is healthy the
//! count moves every second, and when it has not moved for `stall_after`
//! the pipeline is stuck (a step blocked on a lock or the disk, or
//! spinning) while its timer, and whatever the kernel wrote to the rings
//! meanwhile, wait for it: pending work by construction, with no need to
//! peek into rings the pipeline owns. The kernel's drop counters, read once
//! a second only while stalled, say in the log how much was lost.
//!
//! A task checks once a second ([`Health::run`]), off the event path, on a
//! thread and runtime of its own with the plaintext listener ([`spawn`]).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use fdr_proto::v1::flight_recorder_server::FlightRecorderServer;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{server::NamedService, transport::Server};
use tonic_health::{
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
    ServingStatus,
};

use super::{state::State, ApiError, Service};

/// How often the status is computed.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The service names reported: the agent as a whole, and its API.
pub const SERVICES: [&str; 2] = ["", <FlightRecorderServer<Service> as NamedService>::NAME];

/// The health status shared by every listener, and what the check found.
pub struct Health {
    reporter: HealthReporter,
    stall_after: Duration,
    /// Whether the last check said SERVING.
    serving: AtomicBool,
    /// How long ago the pipeline last finished a step, in ms, as of the
    /// last check; `u64::MAX` before its first step.
    lag_ms: AtomicU64,
}

impl Health {
    /// NOT_SERVING for every name until [`Health::run`] finds the pipeline
    /// running.
    pub async fn new(stall_after: Duration) -> Arc<Self> {
        let reporter = HealthReporter::new();
        for name in SERVICES {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        Arc::new(Health {
            reporter,
            stall_after,
            serving: AtomicBool::new(false),
            lag_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// The `grpc.health.v1.Health` service, to add to a server.
    pub fn server(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Whether the agent reports SERVING.
    pub fn serving(&self) -> bool {
        self.serving.load(Relaxed)
    }

    /// How long ago the pipeline last finished a step (to the second the
    /// check runs at); `None` before its first step.
    pub fn pipeline_lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in SERVICES {
            self.reporter.set_service_status(name, status).await;
        }
        self.serving.store(serving, Relaxed);
    }

    /// Checks the pipeline once a second until `stop`; NOT_SERVING then.
    /// Offline (no pipeline), SERVING from the start until `stop`.
    pub async fn run(self: Arc<Self>, state: Arc<State>, mut stop: watch::Receiver<bool>) {
        if state.offline {
            tracing::info!("health: SERVING (offline, no pipeline to watch)");
            self.set(true).await;
            let _ = stop.wait_for(|&v| v).await;
            self.set(false).await;
            return;
        }
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stall = Stall::new(self.stall_after);
        let mut last: Option<Verdict> = None;
        let mut drops_at_stall = 0;
        loop {
            tokio::select! {
                _ = stop.wait_for(|&v| v) => break,
                _ = tick.tick() => {}
            }
            // Never waits for a lock a stuck step may hold: held means in
            // use, so attached.
            let attached = match state.probes.try_lock() {
                Ok(p) => p.is_some(),
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().is_some(),
                Err(std::sync::TryLockError::WouldBlock) => true,
            };
            let steps = state.counters.pipeline_steps.load(Relaxed);
            let v = stall.observe(attached, steps, Instant::now());
            self.lag_ms.store(
                v.since_step
                    .map_or(u64::MAX, |d| d.as_millis().min(u64::MAX as u128 - 1) as u64),
                Relaxed,
            );
            let changed = last.is_none_or(|l| l.state != v.state);
            if v.state == Status::Stalled {
                let drops = kernel_drops(&state).unwrap_or(drops_at_stall);
                if changed {
                    drops_at_stall = drops;
                    tracing::error!(
                        secs = v.since_step.map_or(0, |d| d.as_secs()),
                        "the pipeline has not advanced: health NOT_SERVING"
                    );
                } else if v.since_step.is_some_and(|d| d.as_secs() % 30 == 0) {
                    tracing::warn!(
                        secs = v.since_step.map_or(0, |d| d.as_secs()),
                        kernel_drops = drops - drops_at_stall,
                        "the pipeline is still stalled"
                    );
                }
            }
            if changed {
                if v.state == Status::Serving && last.is_some_and(|l| l.state == Status::Stalled) {
                    tracing::warn!("the pipeline advances again: health SERVING");
                } else {
                    tracing::info!(status = ?v.state, "health");
                }
                self.set(v.state == Status::Serving).await;
            }
            last = Some(v);
        }
        self.set(false).await;
    }
}

/// Kernel drops of every kind, summed, unless the probes' lock is taken.
fn kernel_drops(state: &State) -> Option<u64> {
    let probes = state.probes.try_lock().ok()?;
    let drops = probes.as_ref()?.drops().ok()?;
    Some(drops.iter().map(|(_, n)| n).sum())
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The probes are not attached (start-up, shutdown).
    NotAttached,
    /// The pipeline has not finished a step yet.
    Starting,
    Serving,
    /// No step for `stall_after`.
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub state: Status,
    /// Since the pipeline last finished a step (as far as the checks saw).
    pub since_step: Option<Duration>,
}

/// The stall detector: the pipeline's step count as the checks see it, the
/// clock given (tests use a fake one).
#[derive(Debug)]
pub struct Stall {
    stall_after: Duration,
    steps: u64,
    /// When the check last saw the count move.
    advanced: Option<Instant>,
}

impl Stall {
    pub fn new(stall_after: Duration) -> Self {
        Stall {
            stall_after,
            steps: 0,
            advanced: None,
        }
    }

    pub fn observe(&mut self, attached: bool, steps: u64, now: Instant) -> Verdict {
        if steps != self.steps {
            self.steps = steps;
            self.advanced = Some(now);
        }
        let since_step = self.advanced.map(|t| now.saturating_duration_since(t));
        let state = if !attached {
            Status::NotAttached
        } else if steps == 0 {
            Status::Starting
        } else if since_step.is_some_and(|d| d >= self.stall_after) {
            Status::Stalled
        } else {
            Status::Serving
        };
        Verdict { state, since_step }
    }
}

/// Binds the plaintext health listener (a std listener: it is served on
/// the health thread's runtime, see [`spawn`]).
pub fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, ApiError> {
    let bind_err = |source| ApiError::BindTcp {
        addr: addr.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "gRPC health listening (plaintext)");
    Ok(listener)
}

/// Runs the check ([`Health::run`]) and the plaintext listener, if any, on
/// a thread with a runtime of their own, until `stop`: a pipeline step
/// blocked on one of the agent runtime's workers can hold up that
/// runtime's timers and I/O (measured: a 100 ms sleep took 40 s while a
/// step waited 40 s for a lock), and the check must still see the stall
/// and the listener still say so.
pub fn spawn(
    health: Arc<Health>,
    state: Arc<State>,
    listener: Option<std::net::TcpListener>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), ApiError>> {
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ApiError::HealthRuntime)?;
        rt.block_on(async move {
            let check = health.clone().run(state, stop.clone());
            let Some(l) = listener else {
                check.await;
                return Ok(());
            };
            let addr = l
                .local_addr()
                .map_or_else(|_| "-".into(), |a| a.to_string());
            let l =
                TcpListener::from_std(l).map_err(|source| ApiError::BindTcp { addr, source })?;
            let ((), served) = tokio::join!(check, serve(l, health, stop));
            served
        })
    })
}

/// Serves only `grpc.health.v1` on `listener` until `stop`.
async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    Server::builder()
        .add_service(health.server())
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            super::SharedShutdown(stop).wait(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_detection_with_a_fake_clock() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Stall::new(Duration::from_secs(30));
        // Before the probes are attached, whatever the count.
        assert_eq!(s.observe(false, 0, at(0)).state, Status::NotAttached);
        // Attached, no step yet.
        assert_eq!(s.observe(true, 0, at(1)).state, Status::Starting);
        // The pipeline runs.
        let v = s.observe(true, 5, at(2));
        assert_eq!(v.state, Status::Serving);
        assert_eq!(v.since_step, Some(Duration::ZERO));
        // Still serving just under stall_after without a step.
        let v = s.observe(true, 5, at(31));
        assert_eq!(v.state, Status::Serving);
        assert_eq!(v.since_step, Some(Duration::from_secs(29)));
        // Stalled at stall_after.
        let v = s.observe(true, 5, at(32));
        assert_eq!(v.state, Status::Stalled);
        assert_eq!(v.since_step, Some(Duration::from_secs(30)));
        assert_eq!(s.observe(true, 5, at(100)).state, Status::Stalled);
        // Advances again: serving at once.
        let v = s.observe(true, 6, at(101));
        assert_eq!(v.state, Status::Serving);
        assert_eq!(v.since_step, Some(Duration::ZERO));
        // Detached (shutdown): not serving, whatever the pipeline does.
        assert_eq!(s.observe(false, 7, at(102)).state, Status::NotAttached);
    }

    #[tokio::test]
    async fn statuses_start_not_serving_and_follow_the_check() {
        use tonic_health::pb::{
            health_check_response::ServingStatus as Pb, health_server::Health as _,
            HealthCheckRequest,
        };
        let h = Health::new(Duration::from_secs(30)).await;
        let svc = HealthService::from_health_reporter(h.reporter.clone());
        let check = |name: &str| {
            tonic::Request::new(HealthCheckRequest {
                service: name.to_owned(),
            })
        };
        for name in SERVICES {
            let r = svc.check(check(name)).await.unwrap().into_inner();
            assert_eq!(r.status, Pb::NotServing as i32, "{name:?}");
        }
        assert_eq!(SERVICES[1], "fdr.v1.FlightRecorder");
        h.set(true).await;
        assert!(h.serving());
        for name in SERVICES {
            let r = svc.check(check(name)).await.unwrap().into_inner();
            assert_eq!(r.status, Pb::Serving as i32, "{name:?}");
        }
        let unknown = svc.check(check("nope")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
}
