//! Active probes and the slow score they feed.
//!
//! Passive latency (how long real writes took) says little when there is no
//! load, and under load it mixes the disk with the queue in front of it. So
//! every 100 ms each probe does one small, fixed piece of work — a 512-byte
//! write + `fdatasync` in a data directory, or (with a cluster) a ping to a
//! peer — and times it. A probe slower than its timeout counts against the
//! resource's [`SlowScore`].
//!
//! A disk probe can be given an *extra delay* hook, asked before each sync
//! and slept inside the timed region: the node connects it to its injected
//! disk faults so the probe feels an injected fsync delay exactly as the
//! storage writer does (telemetry does not depend on storage, hence a hook).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Extra time a disk probe waits before its sync (an injected fault).
pub type DelayHook = Arc<dyn Fn() -> Duration + Send + Sync>;

/// One kind of timed check against one target.
pub trait Probe: Send {
    /// `disk` or `peer`: a fixed label value.
    fn kind(&self) -> &'static str;
    /// What is probed (a data directory, a peer id).
    fn target(&self) -> String;
    /// Does the work once and returns how long it took.
    fn run(&mut self) -> io::Result<Duration>;
}

/// Times a small write + `fdatasync` in a data directory.
pub struct DiskProbe {
    dir: PathBuf,
    file: File,
    buf: Vec<u8>,
    counter: u64,
    extra_delay: Option<DelayHook>,
}

impl std::fmt::Debug for DiskProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskProbe")
            .field("dir", &self.dir)
            .field("counter", &self.counter)
            .field("extra_delay", &self.extra_delay.is_some())
            .finish()
    }
}

impl DiskProbe {
    pub const FILE_NAME: &'static str = ".cairn-probe";

    pub fn open(dir: &Path) -> io::Result<DiskProbe> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(Self::FILE_NAME))?;
        // Written once so later probes overwrite allocated blocks: the probe
        // then measures a data write and a device flush, not block allocation.
        file.write_all_at(&[0u8; 4096], 0)?;
        file.sync_all()?;
        Ok(DiskProbe {
            dir: dir.to_path_buf(),
            file,
            buf: vec![0u8; 512],
            counter: 0,
            extra_delay: None,
        })
    }

    /// Sleeps what `hook` answers before every sync, inside the timing.
    pub fn with_extra_delay(mut self, hook: DelayHook) -> DiskProbe {
        self.extra_delay = Some(hook);
        self
    }
}

impl Probe for DiskProbe {
    fn kind(&self) -> &'static str {
        "disk"
    }

    fn target(&self) -> String {
        self.dir.display().to_string()
    }

    fn run(&mut self) -> io::Result<Duration> {
        self.counter += 1;
        self.buf[..8].copy_from_slice(&self.counter.to_le_bytes());
        let started = Instant::now();
        self.file.write_all_at(&self.buf, 0)?;
        if let Some(extra) = self.extra_delay.as_ref().map(|h| h())
            && !extra.is_zero()
        {
            std::thread::sleep(extra);
        }
        self.file.sync_data()?;
        Ok(started.elapsed())
    }
}

/// A health score for one resource, from 1 (healthy) to 100 (unusable),
/// after TiKV's slow score: probes are judged in rounds; a round with
/// timeouts multiplies the score by `1 + timeout_ratio` (so a resource that
/// stays slow reaches 100 within seconds), a clean round lowers it linearly
/// (so one bad second does not flap it back and forth, and recovery takes
/// `recovery` to go from 100 back to 1).
#[derive(Debug, Clone)]
pub struct SlowScore {
    value: f64,
    timeout: Duration,
    round_probes: u32,
    decay_per_round: f64,
    probes: u32,
    timeouts: u32,
}

impl SlowScore {
    pub const MIN: f64 = 1.0;
    pub const MAX: f64 = 100.0;

    /// `round` probes make one round; `recovery` is the time from 100 to 1
    /// when rounds take `round_duration`.
    pub fn new(
        timeout: Duration,
        round: u32,
        round_duration: Duration,
        recovery: Duration,
    ) -> Self {
        let rounds_to_recover = (recovery.as_secs_f64() / round_duration.as_secs_f64()).max(1.0);
        SlowScore {
            value: Self::MIN,
            timeout,
            round_probes: round.max(1),
            decay_per_round: (Self::MAX - Self::MIN) / rounds_to_recover,
            probes: 0,
            timeouts: 0,
        }
    }

    pub fn value(&self) -> f64 {
        self.value
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records one probe; `None` means it failed (counted as a timeout).
    /// Returns true if this completed a round.
    pub fn record(&mut self, took: Option<Duration>) -> bool {
        self.probes += 1;
        if took.is_none_or(|d| d > self.timeout) {
            self.timeouts += 1;
        }
        if self.probes < self.round_probes {
            return false;
        }
        if self.timeouts > 0 {
            let ratio = f64::from(self.timeouts) / f64::from(self.probes);
            self.value = (self.value * (1.0 + ratio)).min(Self::MAX);
        } else {
            // The epsilon keeps float rounding from adding a round to recovery.
            let lowered = self.value - self.decay_per_round;
            self.value = if lowered < Self::MIN + 1e-9 {
                Self::MIN
            } else {
                lowered
            };
        }
        self.probes = 0;
        self.timeouts = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score() -> SlowScore {
        SlowScore::new(
            Duration::from_millis(50),
            10,
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn a_healthy_resource_stays_at_one() {
        let mut s = score();
        for _ in 0..1000 {
            s.record(Some(Duration::from_micros(200)));
        }
        assert_eq!(s.value(), 1.0);
    }

    #[test]
    fn a_slow_resource_rises_multiplicatively_to_the_cap() {
        let mut s = score();
        let mut rounds = 0;
        while s.value() < SlowScore::MAX {
            for _ in 0..10 {
                s.record(Some(Duration::from_millis(80)));
            }
            rounds += 1;
            assert!(rounds < 10, "should saturate within ~7 rounds");
        }
        assert_eq!(rounds, 7); // 1 → 2 → 4 → … → 64 → 100
    }

    #[test]
    fn recovery_is_linear_and_takes_the_configured_time() {
        let mut s = score();
        for _ in 0..100 {
            s.record(None);
        }
        assert_eq!(s.value(), 100.0);
        let mut rounds = 0;
        while s.value() > 1.0 {
            for _ in 0..10 {
                s.record(Some(Duration::from_micros(100)));
            }
            rounds += 1;
        }
        assert_eq!(rounds, 30);
    }

    #[test]
    fn disk_probe_times_a_real_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = DiskProbe::open(dir.path()).unwrap();
        let took = p.run().unwrap();
        assert!(took > Duration::ZERO);
        assert_eq!(p.kind(), "disk");
        assert!(dir.path().join(DiskProbe::FILE_NAME).exists());
    }

    #[test]
    fn disk_probe_feels_the_extra_delay() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = DiskProbe::open(dir.path())
            .unwrap()
            .with_extra_delay(Arc::new(|| Duration::from_millis(20)));
        assert!(p.run().unwrap() >= Duration::from_millis(20));
    }
}
