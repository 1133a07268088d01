//! Where the whole machine's CPU time went while a scenario was measured.
//!
//! On a VM, throughput moves with what the host gives: a run can be CPU
//! bound, waiting (idle with requests in flight), or losing time to other
//! guests (steal). Read from the first line of `/proc/stat` at the start and
//! end of the measured window; absent where there is no `/proc/stat`.

use serde::Serialize;

/// Shares of all CPUs' time over the window, in percent.
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct MachineShare {
    /// user, nice, system, irq and softirq: anything running, load
    /// generator and server alike.
    pub busy_pct: f64,
    pub idle_pct: f64,
    pub iowait_pct: f64,
    /// Time the hypervisor gave to someone else.
    pub steal_pct: f64,
}

impl std::fmt::Display for MachineShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "machine: busy {:.0} %, idle {:.0} %, iowait {:.0} %, steal {:.0} %",
            self.busy_pct, self.idle_pct, self.iowait_pct, self.steal_pct
        )
    }
}

/// Cumulative ticks of the aggregate `cpu` line: busy, idle, iowait, steal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ticks([u64; 4]);

/// Reads the machine's tick counters now.
pub fn ticks() -> Option<Ticks> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The aggregate `cpu` line: user nice system idle iowait irq softirq steal ...
fn parse(stat: &str) -> Option<Ticks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(Ticks([
        at(0) + at(1) + at(2) + at(5) + at(6),
        at(3),
        at(4),
        at(7),
    ]))
}

/// Shares between two readings; `None` if no time passed.
pub fn share(before: Ticks, after: Ticks) -> Option<MachineShare> {
    let d: Vec<f64> = (0..4)
        .map(|i| after.0[i].saturating_sub(before.0[i]) as f64)
        .collect();
    let total: f64 = d.iter().sum();
    (total > 0.0).then(|| MachineShare {
        busy_pct: 100.0 * d[0] / total,
        idle_pct: 100.0 * d[1] / total,
        iowait_pct: 100.0 * d[2] / total,
        steal_pct: 100.0 * d[3] / total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_come_from_the_aggregate_cpu_line() {
        let before = parse("cpu  100 0 50 800 20 5 5 20 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n").unwrap();
        let after = parse("cpu  160 0 70 850 30 10 10 40 0 0\n").unwrap();
        let s = share(before, after).unwrap();
        // busy 60+20+5+5 = 90, idle 50, iowait 10, steal 20: 170 ticks
        assert!((s.busy_pct - 100.0 * 90.0 / 170.0).abs() < 1e-9);
        assert!((s.idle_pct - 100.0 * 50.0 / 170.0).abs() < 1e-9);
        assert!((s.iowait_pct - 100.0 * 10.0 / 170.0).abs() < 1e-9);
        assert!((s.steal_pct - 100.0 * 20.0 / 170.0).abs() < 1e-9);
        assert_eq!(share(after, after), None);
        assert_eq!(parse("intr 1 2 3\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        if std::path::Path::new("/proc/stat").exists() {
            assert!(ticks().is_some());
        }
    }
}
