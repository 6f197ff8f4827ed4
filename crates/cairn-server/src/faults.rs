//! Injected faults of a node, for testing the cluster monitor's detectors:
//! the CPU burner, and the list of every fault in force (disk, CPU,
//! network) that telemetry snapshots carry.
//!
//! # CPU burner
//! [`CpuBurner::start`] runs `threads` OS threads inside the node process;
//! each spins for `duty_percent` of every 100 ms period and sleeps the rest,
//! so the process's CPU use rises by about `threads × duty` cores (as far
//! as the machine has them). A new burn replaces the one running. Threads
//! check a stop flag on every spin and sleep on a condition variable, so
//! they exit within one spin when stopped, and stop by themselves at the
//! time to live. Limits: 1..=64 threads, duty 1..=100 %, TTL ≤ 1 h.
//!
//! Disk faults live in `cairn-storage` (the writer applies them) and
//! network faults in the cluster transport's fault filter; this module only
//! lists them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_cluster::transport::{Directions, FaultAction, FaultFilter};
use cairn_storage::DiskFaults;
use cairn_telemetry::snapshot::InjectedFault;
use cairn_types::api::{CpuFaultView, NetworkRuleView};
use parking_lot::{Condvar, Mutex};

/// Most burner threads.
pub const MAX_BURN_THREADS: u32 = 64;
/// The period each burner thread divides into spinning and sleeping.
pub const BURN_PERIOD: Duration = Duration::from_millis(100);
/// Time to live of a fault when the request names none.
pub const DEFAULT_FAULT_TTL: Duration = Duration::from_secs(60);
/// The longest time to live accepted.
pub const MAX_FAULT_TTL: Duration = cairn_storage::fault::MAX_FAULT_TTL;

pub use cairn_types::clock::unix_ms_in;

/// The stop signal the burner threads share: a flag checked while
/// spinning, and a condition variable that wakes them from their sleep.
#[derive(Debug, Default)]
struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        let _guard = self.lock.lock();
        self.wake.notify_all();
    }

    fn stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sleeps until `until` or a stop, whichever comes first.
    fn sleep_until(&self, until: Instant) {
        let mut guard = self.lock.lock();
        while !self.stopped() {
            if self.wake.wait_until(&mut guard, until).timed_out() {
                return;
            }
        }
    }
}

#[derive(Debug)]
struct Burn {
    threads: u32,
    duty_percent: u32,
    expires_at: Instant,
    expires_unix_ms: u64,
    stop: Arc<Stop>,
    handles: Vec<JoinHandle<()>>,
}

impl Burn {
    fn view(&self) -> CpuFaultView {
        CpuFaultView {
            threads: self.threads,
            duty_percent: self.duty_percent,
            expires_unix_ms: self.expires_unix_ms,
            remaining_ms: ms(self.expires_at.saturating_duration_since(Instant::now())),
        }
    }

    /// Stops the threads and waits for them (each exits within one spin).
    fn finish(self) {
        self.stop.stop();
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// The CPU burner of one node. See the module docs.
#[derive(Debug, Default)]
pub struct CpuBurner {
    current: Mutex<Option<Burn>>,
}

impl CpuBurner {
    /// Checks the limits of a burn request.
    pub fn validate(threads: u32, duty_percent: u32) -> Result<(), String> {
        if !(1..=MAX_BURN_THREADS).contains(&threads) {
            return Err(format!("threads must be within 1..={MAX_BURN_THREADS}"));
        }
        if !(1..=100).contains(&duty_percent) {
            return Err("duty_percent must be within 1..=100".into());
        }
        Ok(())
    }

    /// Starts a burn (replacing the one running); the caller validated it.
    /// Blocks briefly while the previous burn's threads exit.
    pub fn start(
        &self,
        threads: u32,
        duty_percent: u32,
        ttl: Duration,
    ) -> std::io::Result<CpuFaultView> {
        let ttl = ttl.min(MAX_FAULT_TTL);
        let mut current = self.current.lock();
        if let Some(old) = current.take() {
            old.finish();
        }
        let stop = Arc::new(Stop::default());
        let expires_at = Instant::now() + ttl;
        let spin = BURN_PERIOD * duty_percent / 100;
        let mut handles = Vec::with_capacity(threads as usize);
        for i in 0..threads {
            let signal = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cairn-cpu-burn-{i}"))
                .spawn(move || burn(&signal, spin, expires_at));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Do not leave half a burn running.
                    stop.stop();
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
        }
        let burn = Burn {
            threads,
            duty_percent,
            expires_at,
            expires_unix_ms: unix_ms_in(ttl),
            stop,
            handles,
        };
        let view = burn.view();
        *current = Some(burn);
        Ok(view)
    }

    /// The burn running now; one past its TTL is reaped first.
    pub fn current(&self) -> Option<CpuFaultView> {
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|b| b.expires_at <= Instant::now())
        {
            // Its threads have stopped (or stop within one spin) by themselves.
            if let Some(old) = current.take() {
                old.finish();
            }
        }
        current.as_ref().map(Burn::view)
    }

    /// Stops the burn, if any, and waits for its threads; true if one ran.
    pub fn stop(&self) -> bool {
        let old = self.current.lock().take();
        old.map(Burn::finish).is_some()
    }
}

impl Drop for CpuBurner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One burner thread: spin `spin` of each period, sleep the rest.
fn burn(stop: &Stop, spin: Duration, expires_at: Instant) {
    loop {
        let period_start = Instant::now();
        if stop.stopped() || period_start >= expires_at {
            return;
        }
        let spin_until = period_start + spin;
        while Instant::now() < spin_until {
            if stop.stopped() {
                return;
            }
            std::hint::spin_loop();
        }
        stop.sleep_until((period_start + BURN_PERIOD).min(expires_at));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The disk fault in force, as shown to operators.
pub fn disk_view(faults: &DiskFaults) -> Option<cairn_types::api::DiskFaultView> {
    faults.current().map(|f| cairn_types::api::DiskFaultView {
        fsync_delay_ms: ms(f.fault.fsync_delay),
        write_delay_ms: ms(f.fault.write_delay),
        error_rate: f.fault.error_rate,
        expires_unix_ms: f.expires_unix_ms,
        remaining_ms: ms(f.expires_at.saturating_duration_since(Instant::now())),
    })
}

/// The network rules in force, as shown to operators.
pub fn network_views(filter: &FaultFilter) -> Vec<NetworkRuleView> {
    let now = tokio::time::Instant::now();
    filter
        .rules()
        .into_iter()
        .map(|r| {
            let rule = &r.rule;
            let (action, delay_ms, jitter_ms, probability) = match &rule.action {
                FaultAction::Block if rule.peers.is_some() => ("partition", None, None, None),
                FaultAction::Block => ("isolate", None, None, None),
                FaultAction::Delay { fixed, jitter } => {
                    ("delay", Some(ms(*fixed)), Some(ms(*jitter)), None)
                }
                FaultAction::Drop { probability } => ("drop", None, None, Some(*probability)),
            };
            let remaining = r.expires_at.map(|t| t.saturating_duration_since(now));
            NetworkRuleView {
                id: r.id,
                action: action.into(),
                peers: rule.peers.as_ref().map(|p| p.iter().copied().collect()),
                direction: match rule.directions {
                    Directions::Both => "both",
                    Directions::Inbound => "inbound",
                    Directions::Outbound => "outbound",
                }
                .into(),
                delay_ms,
                jitter_ms,
                probability,
                group: rule.group,
                frame_kind: rule.kind,
                expires_unix_ms: remaining.map(unix_ms_in),
                remaining_ms: remaining.map(ms),
            }
        })
        .collect()
}

/// Every fault in force, as telemetry snapshots list them: the disk fault,
/// the CPU burn, and one entry per network rule.
pub fn list(disk: &DiskFaults, cpu: &CpuBurner, network: &[NetworkRuleView]) -> Vec<InjectedFault> {
    let mut out = Vec::new();
    if let Some(d) = disk_view(disk) {
        out.push(InjectedFault {
            kind: "disk".into(),
            peer: None,
            detail: format!(
                "fsync_delay_ms={} write_delay_ms={} error_rate={}",
                d.fsync_delay_ms, d.write_delay_ms, d.error_rate
            ),
            expires_unix_ms: Some(d.expires_unix_ms),
        });
    }
    if let Some(c) = cpu.current() {
        out.push(InjectedFault {
            kind: "cpu".into(),
            peer: None,
            detail: format!("threads={} duty_percent={}", c.threads, c.duty_percent),
            expires_unix_ms: Some(c.expires_unix_ms),
        });
    }
    for r in network {
        let mut detail = format!("id={} action={} direction={}", r.id, r.action, r.direction);
        if let Some(peers) = &r.peers {
            let peers: Vec<String> = peers.iter().map(u64::to_string).collect();
            detail.push_str(&format!(" peers={}", peers.join(",")));
        }
        if let Some(d) = r.delay_ms {
            detail.push_str(&format!(" delay_ms={d}"));
        }
        if let Some(j) = r.jitter_ms {
            detail.push_str(&format!(" jitter_ms={j}"));
        }
        if let Some(p) = r.probability {
            detail.push_str(&format!(" probability={p}"));
        }
        out.push(InjectedFault {
            kind: "network".into(),
            peer: r.peers.as_ref().filter(|p| p.len() == 1).map(|p| p[0]),
            detail,
            expires_unix_ms: r.expires_unix_ms,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(CpuBurner::validate(1, 50).is_ok());
        assert!(CpuBurner::validate(0, 50).is_err());
        assert!(CpuBurner::validate(65, 50).is_err());
        assert!(CpuBurner::validate(1, 0).is_err());
        assert!(CpuBurner::validate(1, 101).is_err());
    }

    #[test]
    fn a_burn_runs_until_stopped_and_its_threads_exit() {
        let b = CpuBurner::default();
        let v = b.start(2, 10, Duration::from_secs(60)).unwrap();
        assert_eq!((v.threads, v.duty_percent), (2, 10));
        assert!(b.current().is_some());
        // `stop` joins the threads: returning at all shows they exited.
        assert!(b.stop());
        assert!(b.current().is_none());
        assert!(!b.stop());
    }

    #[test]
    fn a_burn_stops_at_its_ttl() {
        let b = CpuBurner::default();
        b.start(1, 50, Duration::from_millis(30)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.current().is_none());
    }

    #[test]
    fn the_list_names_each_fault() {
        let disk = DiskFaults::new();
        let cpu = CpuBurner::default();
        assert!(list(&disk, &cpu, &[]).is_empty());
        disk.set(
            cairn_storage::DiskFault {
                fsync_delay: Duration::from_millis(50),
                ..Default::default()
            },
            Duration::from_secs(60),
        );
        let rule = NetworkRuleView {
            id: 3,
            action: "partition".into(),
            peers: Some(vec![2]),
            direction: "both".into(),
            delay_ms: None,
            jitter_ms: None,
            probability: None,
            group: None,
            frame_kind: None,
            expires_unix_ms: None,
            remaining_ms: None,
        };
        let l = list(&disk, &cpu, &[rule]);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].kind, "disk");
        assert!(l[0].detail.contains("fsync_delay_ms=50"), "{}", l[0].detail);
        assert_eq!((l[1].kind.as_str(), l[1].peer), ("network", Some(2)));
    }
}
