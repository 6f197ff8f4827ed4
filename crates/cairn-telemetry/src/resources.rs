//! Host and process resources, sampled from `/proc` and `/sys` once a second.
//!
//! Each sample reads cumulative counters (CPU ticks, disk I/O counts and
//! times, network bytes, TCP retransmits); rates come from the difference of
//! two samples, so the first sample has no rates (its CPU "usage" would be the
//! average since boot). Per-device disk figures come from `/proc/diskstats`:
//! await = time spent on I/Os completed in the interval / their number, and
//! utilisation = share of the interval the device had I/O in flight.
//! Limits respect cgroup v2 (`cpu.max`, `memory.max`) when the process runs
//! in one, so a container's 2 cores read as 2, not as the host's 64.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use procfs::{Current, CurrentSI};
use serde::{Deserialize, Serialize};

use crate::rate::{counter_delta, counter_rate};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    pub reads: u64,
    pub writes: u64,
    pub sectors_read: u64,
    pub sectors_written: u64,
    /// Milliseconds spent on reads / writes (summed over I/Os).
    pub read_ms: u64,
    pub write_ms: u64,
    /// Milliseconds with at least one I/O in flight.
    pub busy_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

/// Cumulative readings at one instant.
#[derive(Debug, Clone)]
pub struct RawSample {
    pub at: Instant,
    pub process_cpu_ticks: u64,
    pub process_rss_bytes: u64,
    /// `/proc/self/io`: this process's own I/O, cumulative.
    pub process_io: Option<ProcessIoCounters>,
    pub host_cpu: CpuTicks,
    pub host_cores: usize,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub disks: BTreeMap<String, DiskCounters>,
    pub networks: BTreeMap<String, NetCounters>,
    pub tcp_retransmits: Option<u64>,
    pub pressure: Option<Pressure>,
    pub cgroup: CgroupLimits,
}

/// PSI: share of the last 10 s in which some (or all) tasks were stalled on
/// the resource, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    pub cpu_some: f64,
    pub io_some: f64,
    pub io_full: f64,
    pub memory_some: f64,
    pub memory_full: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupLimits {
    pub cpu_cores: Option<f64>,
    pub memory_limit_bytes: Option<u64>,
    pub memory_current_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskRates {
    pub device: String,
    pub reads_per_second: f64,
    pub writes_per_second: f64,
    pub read_bytes_per_second: f64,
    pub write_bytes_per_second: f64,
    /// Average time per completed I/O in the interval; `None` without I/O.
    pub await_ms: Option<f64>,
    /// Share of the interval with I/O in flight, 0..=1.
    pub utilization: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetRates {
    pub interface: String,
    pub receive_bytes_per_second: f64,
    pub transmit_bytes_per_second: f64,
}

/// Cumulative I/O of this process (`/proc/self/io`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessIoCounters {
    /// Bytes this process caused to be fetched from storage.
    pub read_bytes: u64,
    /// Bytes this process caused to be sent to storage.
    pub write_bytes: u64,
    pub read_syscalls: u64,
    pub write_syscalls: u64,
}

/// This process's own I/O over the last interval: unlike the per-device
/// figures, these tell apart nodes that share a disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessIoRates {
    pub read_bytes_per_second: f64,
    pub write_bytes_per_second: f64,
    pub read_syscalls_per_second: f64,
    pub write_syscalls_per_second: f64,
}

/// Resource use over the last interval. Fields named `process_*` are this
/// node's own; all others are host-wide (shared by every process on the
/// host, so identical for nodes that share one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSnapshot {
    pub interval_seconds: f64,
    /// CPU cores this process used (1.0 = one full core).
    pub process_cpu_cores: f64,
    pub process_rss_bytes: u64,
    /// This process's own disk I/O (absent where `/proc/self/io` is not
    /// readable).
    #[serde(default)]
    pub process_io: Option<ProcessIoRates>,
    /// Busy share of all host cores, 0..=1.
    pub host_cpu_utilization: f64,
    /// Cores available to us: the cgroup quota if set, else the host's.
    pub cpu_limit_cores: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub cgroup: CgroupLimits,
    pub disks: Vec<DiskRates>,
    pub networks: Vec<NetRates>,
    pub tcp_retransmits_per_second: Option<f64>,
    pub pressure: Option<Pressure>,
}

/// Reads `/proc` and keeps the previous sample for rates.
#[derive(Debug)]
pub struct ResourceSampler {
    ticks_per_second: f64,
    cgroup_dir: Option<PathBuf>,
    previous: Option<RawSample>,
}

impl Default for ResourceSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceSampler {
    pub fn new() -> Self {
        ResourceSampler {
            ticks_per_second: procfs::ticks_per_second() as f64,
            cgroup_dir: own_cgroup_dir(),
            previous: None,
        }
    }

    /// Takes a sample; returns rates against the previous one (none the
    /// first time) and the raw sample for cumulative counters.
    pub fn sample(&mut self) -> (Option<ResourceSnapshot>, RawSample) {
        let raw = self.read();
        let snapshot = self
            .previous
            .as_ref()
            .map(|prev| derive(prev, &raw, self.ticks_per_second));
        self.previous = Some(raw.clone());
        (snapshot, raw)
    }

    fn read(&self) -> RawSample {
        let me = procfs::process::Process::myself().ok();
        let stat = me.as_ref().and_then(|p| p.stat().ok());
        let page_size = procfs::page_size();
        let kernel = procfs::KernelStats::current().ok();
        let host_cpu = kernel.as_ref().map_or_else(CpuTicks::default, |k| {
            let t = &k.total;
            let idle = t.idle + t.iowait.unwrap_or(0);
            let busy = t.user
                + t.nice
                + t.system
                + t.irq.unwrap_or(0)
                + t.softirq.unwrap_or(0)
                + t.steal.unwrap_or(0);
            CpuTicks {
                busy,
                total: busy + idle,
            }
        });
        let meminfo = procfs::Meminfo::current().ok();
        let disks = procfs::diskstats()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| is_whole_physical_device(&d.name))
            .map(|d| {
                (
                    d.name.clone(),
                    DiskCounters {
                        reads: d.reads,
                        writes: d.writes,
                        sectors_read: d.sectors_read,
                        sectors_written: d.sectors_written,
                        read_ms: d.time_reading,
                        write_ms: d.time_writing,
                        busy_ms: d.time_in_progress,
                    },
                )
            })
            .collect();
        let networks = procfs::net::dev_status()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, d)| {
                (
                    name,
                    NetCounters {
                        rx_bytes: d.recv_bytes,
                        tx_bytes: d.sent_bytes,
                    },
                )
            })
            .collect();
        RawSample {
            at: Instant::now(),
            process_cpu_ticks: stat.as_ref().map_or(0, |s| s.utime + s.stime),
            process_rss_bytes: stat.as_ref().map_or(0, |s| s.rss * page_size),
            process_io: me
                .as_ref()
                .and_then(|p| p.io().ok())
                .map(|io| ProcessIoCounters {
                    read_bytes: io.read_bytes,
                    write_bytes: io.write_bytes,
                    read_syscalls: io.syscr,
                    write_syscalls: io.syscw,
                }),
            host_cpu,
            host_cores: kernel.as_ref().map_or(1, |k| k.cpu_time.len().max(1)),
            memory_total_bytes: meminfo.as_ref().map_or(0, |m| m.mem_total),
            memory_available_bytes: meminfo.as_ref().and_then(|m| m.mem_available).unwrap_or(0),
            disks,
            networks,
            tcp_retransmits: procfs::net::snmp().ok().map(|s| s.tcp_retrans_segs),
            pressure: read_pressure(),
            cgroup: self
                .cgroup_dir
                .as_deref()
                .map(read_cgroup)
                .unwrap_or_default(),
        }
    }
}

/// Rates between two samples. Pure, so the math is testable.
pub fn derive(prev: &RawSample, cur: &RawSample, ticks_per_second: f64) -> ResourceSnapshot {
    let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
    let rate = |a: u64, b: u64| counter_rate(a, b, secs).unwrap_or(0.0);
    let host_total = counter_delta(prev.host_cpu.total, cur.host_cpu.total);
    let host_busy = counter_delta(prev.host_cpu.busy, cur.host_cpu.busy);
    let disks = cur
        .disks
        .iter()
        .map(|(name, c)| {
            let p = prev.disks.get(name).copied().unwrap_or(*c);
            let ios = counter_delta(p.reads, c.reads) + counter_delta(p.writes, c.writes);
            let io_ms = counter_delta(p.read_ms, c.read_ms) + counter_delta(p.write_ms, c.write_ms);
            DiskRates {
                device: name.clone(),
                reads_per_second: rate(p.reads, c.reads),
                writes_per_second: rate(p.writes, c.writes),
                read_bytes_per_second: rate(p.sectors_read, c.sectors_read) * 512.0,
                write_bytes_per_second: rate(p.sectors_written, c.sectors_written) * 512.0,
                await_ms: (ios > 0).then(|| io_ms as f64 / ios as f64),
                utilization: if secs > 0.0 {
                    (counter_delta(p.busy_ms, c.busy_ms) as f64 / 1000.0 / secs).min(1.0)
                } else {
                    0.0
                },
            }
        })
        .collect();
    let networks = cur
        .networks
        .iter()
        .map(|(name, c)| {
            let p = prev.networks.get(name).copied().unwrap_or(*c);
            NetRates {
                interface: name.clone(),
                receive_bytes_per_second: rate(p.rx_bytes, c.rx_bytes),
                transmit_bytes_per_second: rate(p.tx_bytes, c.tx_bytes),
            }
        })
        .collect();
    ResourceSnapshot {
        interval_seconds: secs,
        process_cpu_cores: rate(prev.process_cpu_ticks, cur.process_cpu_ticks) / ticks_per_second,
        process_rss_bytes: cur.process_rss_bytes,
        process_io: match (prev.process_io, cur.process_io) {
            (Some(p), Some(c)) => Some(ProcessIoRates {
                read_bytes_per_second: rate(p.read_bytes, c.read_bytes),
                write_bytes_per_second: rate(p.write_bytes, c.write_bytes),
                read_syscalls_per_second: rate(p.read_syscalls, c.read_syscalls),
                write_syscalls_per_second: rate(p.write_syscalls, c.write_syscalls),
            }),
            _ => None,
        },
        host_cpu_utilization: if host_total > 0 {
            host_busy as f64 / host_total as f64
        } else {
            0.0
        },
        cpu_limit_cores: cur
            .cgroup
            .cpu_cores
            .unwrap_or(cur.host_cores as f64)
            .min(cur.host_cores as f64),
        memory_total_bytes: cur.memory_total_bytes,
        memory_available_bytes: cur.memory_available_bytes,
        cgroup: cur.cgroup,
        disks,
        networks,
        tcp_retransmits_per_second: match (prev.tcp_retransmits, cur.tcp_retransmits) {
            (Some(a), Some(b)) => counter_rate(a, b, secs),
            _ => None,
        },
        pressure: cur.pressure,
    }
}

/// Whole block devices only (not partitions, loop or RAM disks), so labels
/// stay few and counts are not doubled.
fn is_whole_physical_device(name: &str) -> bool {
    if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram") {
        return false;
    }
    Path::new("/sys/block").join(name).exists()
}

fn read_pressure() -> Option<Pressure> {
    let cpu = procfs::CpuPressure::current().ok()?;
    let io = procfs::IoPressure::current().ok()?;
    let memory = procfs::MemoryPressure::current().ok()?;
    Some(Pressure {
        cpu_some: f64::from(cpu.some.avg10),
        io_some: f64::from(io.some.avg10),
        io_full: f64::from(io.full.avg10),
        memory_some: f64::from(memory.some.avg10),
        memory_full: f64::from(memory.full.avg10),
    })
}

/// The cgroup v2 directory of this process, if it runs in one.
fn own_cgroup_dir() -> Option<PathBuf> {
    let content = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = content.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    dir.join("cpu.max").exists().then_some(dir).or_else(|| {
        let root = PathBuf::from("/sys/fs/cgroup");
        root.join("memory.max").exists().then_some(root)
    })
}

fn read_cgroup(dir: &Path) -> CgroupLimits {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    CgroupLimits {
        cpu_cores: read("cpu.max").and_then(|s| parse_cpu_max(&s)),
        memory_limit_bytes: read("memory.max").and_then(|s| s.trim().parse().ok()),
        memory_current_bytes: read("memory.current").and_then(|s| s.trim().parse().ok()),
    }
}

/// `cpu.max` is "QUOTA PERIOD" or "max PERIOD".
pub fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut parts = s.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(at: Instant, cpu: u64, disk: DiskCounters, rx: u64) -> RawSample {
        RawSample {
            at,
            process_cpu_ticks: cpu,
            process_rss_bytes: 1 << 20,
            process_io: None,
            host_cpu: CpuTicks {
                busy: cpu,
                total: cpu * 4,
            },
            host_cores: 2,
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 4 << 30,
            disks: BTreeMap::from([("vda".to_string(), disk)]),
            networks: BTreeMap::from([(
                "lo".to_string(),
                NetCounters {
                    rx_bytes: rx,
                    tx_bytes: rx,
                },
            )]),
            tcp_retransmits: Some(cpu),
            pressure: None,
            cgroup: CgroupLimits::default(),
        }
    }

    #[test]
    fn disk_await_and_utilisation_come_from_diskstats_deltas() {
        let t0 = Instant::now();
        let a = sample(t0, 100, DiskCounters::default(), 0);
        let b = sample(
            t0 + Duration::from_secs(2),
            300,
            DiskCounters {
                reads: 10,
                writes: 90,
                sectors_read: 80,
                sectors_written: 720,
                read_ms: 20,
                write_ms: 180,
                busy_ms: 500,
            },
            2_000_000,
        );
        let s = derive(&a, &b, 100.0);
        assert_eq!(s.process_cpu_cores, 1.0); // 200 ticks over 2 s at 100 Hz
        assert_eq!(s.host_cpu_utilization, 0.25);
        let d = &s.disks[0];
        assert_eq!(d.writes_per_second, 45.0);
        assert_eq!(d.write_bytes_per_second, 720.0 * 512.0 / 2.0);
        assert_eq!(d.await_ms, Some(2.0)); // 200 ms over 100 I/Os
        assert_eq!(d.utilization, 0.25); // 0.5 s busy of 2 s
        assert_eq!(s.networks[0].receive_bytes_per_second, 1_000_000.0);
        assert_eq!(s.tcp_retransmits_per_second, Some(100.0));
    }

    #[test]
    fn an_idle_disk_has_no_await() {
        let t0 = Instant::now();
        let a = sample(t0, 1, DiskCounters::default(), 0);
        let b = sample(t0 + Duration::from_secs(1), 1, DiskCounters::default(), 0);
        assert_eq!(derive(&a, &b, 100.0).disks[0].await_ms, None);
    }

    #[test]
    fn counters_that_go_backwards_are_treated_as_resets() {
        let t0 = Instant::now();
        let a = sample(t0, 500, DiskCounters::default(), 10_000);
        let b = sample(
            t0 + Duration::from_secs(1),
            50,
            DiskCounters::default(),
            300,
        );
        let s = derive(&a, &b, 100.0);
        assert_eq!(s.networks[0].receive_bytes_per_second, 300.0);
        assert_eq!(s.process_cpu_cores, 0.5);
    }

    #[test]
    fn cpu_max_parses_quota_and_unlimited() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
    }

    #[test]
    fn sampling_this_machine_reads_real_numbers() {
        let mut s = ResourceSampler::new();
        let (first, raw) = s.sample();
        assert!(first.is_none(), "the first sample has no interval");
        assert!(raw.memory_total_bytes > 0 && raw.host_cpu.total > 0);
        std::thread::sleep(Duration::from_millis(50));
        let (second, _) = s.sample();
        let second = second.unwrap();
        assert!(second.interval_seconds > 0.0);
        assert!(second.cpu_limit_cores >= 1.0 || second.cgroup.cpu_cores.is_some());
        assert!(second.networks.iter().any(|n| n.interface == "lo"));
    }
}
