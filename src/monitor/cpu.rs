//! Who used the CPU over an interval (a trial, or a gap between trials): the server's process
//! tree, the harness's own process, and everything else ("foreign" load), from two snapshots of
//! `/proc/stat` (the machine's ticks) and `/proc/<pid>/stat` (each process's `utime + stime`).
//! Both count in the same clock ticks, so no wall clock enters the figures.
//!
//! The busy-host guard (issue 7) reads these figures: a CPU-bound llama.cpp runner with
//! `num_thread` threads waits at a barrier after every operation for its slowest thread, so
//! another process on one of the cores it uses slows the whole runner, not one thread. Load on
//! cores the runner leaves free (`cpus − num_thread`) does not take its time. A trial is
//! invalid when foreign use exceeds those free cores plus [`BUSY_CORE_SHARE`] of one core —
//! see [`default_busy_limit_pct`] and the README ("How the busy-host guard decides").

use std::time::Duration;

use crate::results::TrialRecord;

use super::procfs::{CpuTimes, ProcFs};

/// Foreign load tolerated on the runner's cores, in cores: a quarter of one. A quiet machine's
/// daemons use a few percent of a core, a compile one core or more, so the limit sits well
/// clear of both; it is also about 25 clock ticks per second of trial, well above the tick
/// quantisation of the figure (a few ticks per trial).
pub const BUSY_CORE_SHARE: f64 = 0.25;

/// The variable that overrides the busy-host limit.
pub const BUSY_VAR: &str = "O3_BUSY_CPU_PCT";

/// The server's tree is "busy" with no request of ours in flight above this share of one core
/// (percent). An idle `llama-server` or `ollama serve` uses about nothing; another client's
/// decode uses one core or more.
pub const SERVER_IDLE_MAX_CORE_PCT: f64 = 25.0;

/// The window before each measured trial in which the server's tree is watched with no request
/// of ours in flight: 30 clock ticks of one core at the usual 100 Hz, so that
/// [`SERVER_IDLE_MAX_CORE_PCT`] is 7 or more ticks, clear of the counters' quantisation.
pub const SERVER_IDLE_WINDOW: Duration = Duration::from_millis(300);

/// One process's CPU ticks, identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcTicks {
    pub pid: u32,
    pub starttime: u64,
    pub ticks: u64,
}

/// The CPU counters at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSnapshot {
    sys: CpuTimes,
    /// The server's processes (serve and runners).
    tree: Vec<ProcTicks>,
    /// The harness's own process (all its threads), unless it is part of the tree.
    own: Option<ProcTicks>,
}

impl CpuSnapshot {
    /// Reads the machine's ticks, the processes `tree` and the process `own` from `proc`.
    /// `None` when the machine's `stat` cannot be read. Processes that cannot be read are left
    /// out (they exited).
    pub(crate) fn read(proc: &ProcFs, tree: &[u32], own: u32) -> Option<CpuSnapshot> {
        let sys = proc.proc_stat()?;
        let ticks = |pid: u32| {
            proc.stat(pid).map(|s| ProcTicks {
                pid,
                starttime: s.starttime,
                ticks: s.cpu_ticks(),
            })
        };
        let mut pids: Vec<u32> = tree.to_vec();
        pids.sort_unstable();
        pids.dedup();
        Some(CpuSnapshot {
            sys,
            tree: pids.iter().filter_map(|&p| ticks(p)).collect(),
            own: if pids.contains(&own) {
                None
            } else {
                ticks(own)
            },
        })
    }

    /// The pids of the tree.
    pub(crate) fn tree_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.tree.iter().map(|t| t.pid)
    }
}

/// CPU use over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    /// Logical CPUs of the machine.
    pub cpus: u32,
    /// Clock ticks of the interval summed over every CPU (busy and idle).
    pub total_ticks: u64,
    /// The machine's busy share: percent of its total CPU (0–100).
    pub machine_pct: f64,
    /// The server's processes: percent of one core.
    pub server_core_pct: f64,
    /// The harness's process: percent of one core.
    pub own_core_pct: f64,
    /// Everything else busy — other processes, interrupts, and on a VM the time the
    /// hypervisor gave to others (steal) — as a share of the machine's total CPU (0–100).
    pub foreign_pct: f64,
}

/// Ticks a process used between two snapshots: the difference when it is the same process in
/// both, all of its ticks when it started in between (a runner loaded during the interval).
fn delta(before: &[ProcTicks], after: &ProcTicks) -> u64 {
    match before.iter().find(|b| b.pid == after.pid) {
        Some(b) if b.starttime == after.starttime => after.ticks.saturating_sub(b.ticks),
        _ => after.ticks,
    }
}

/// Who used the CPU between `before` and `after`. `None` when no tick passed. A process of the
/// tree that exited in between is missing from `after`, so its last ticks count as foreign (an
/// over-estimate, on an interval whose runner changed — which invalidates a trial anyway).
pub fn usage(before: &CpuSnapshot, after: &CpuSnapshot) -> Option<CpuUsage> {
    let total = after.sys.total.checked_sub(before.sys.total)?;
    if total == 0 {
        return None;
    }
    let busy = after.sys.busy.saturating_sub(before.sys.busy).min(total);
    let tree: u64 = after.tree.iter().map(|a| delta(&before.tree, a)).sum();
    let own = match (&before.own, &after.own) {
        (Some(b), Some(a)) => delta(std::slice::from_ref(b), a),
        _ => 0,
    };
    let foreign = busy.saturating_sub(tree).saturating_sub(own);
    let cpus = after.sys.cpus.max(1);
    let per_core = total as f64 / f64::from(cpus);
    Some(CpuUsage {
        cpus,
        total_ticks: total,
        machine_pct: busy as f64 / total as f64 * 100.0,
        server_core_pct: tree as f64 / per_core * 100.0,
        own_core_pct: own as f64 / per_core * 100.0,
        foreign_pct: foreign as f64 / total as f64 * 100.0,
    })
}

/// The default busy-host limit (percent of the machine's total CPU) for a runner with
/// `num_thread` threads on `cpus` logical CPUs: the cores it leaves free plus
/// [`BUSY_CORE_SHARE`] of one core. `num_thread` 0 (the server chooses) counts as every CPU.
/// 2 CPUs, 2 threads: 12.5 %; 16 CPUs, 8 threads: 51.6 %.
pub fn default_busy_limit_pct(cpus: u32, num_thread: u32) -> f64 {
    let cpus = cpus.max(1);
    let used = if num_thread == 0 {
        cpus
    } else {
        num_thread.min(cpus)
    };
    (f64::from(cpus - used) + BUSY_CORE_SHARE) / f64::from(cpus) * 100.0
}

/// The invalid-trial reason when foreign use during the trial exceeds `limit_pct`.
pub fn host_busy_reason(u: &CpuUsage, limit_pct: f64) -> Option<String> {
    (u.foreign_pct > limit_pct).then(|| {
        format!(
            "host busy: other processes used {:.0} % of the CPU (limit {limit_pct:.1} %, {BUSY_VAR})",
            u.foreign_pct
        )
    })
}

/// The reason when the server's tree used more than [`SERVER_IDLE_MAX_CORE_PCT`] of a core over
/// `u`, a window with no request of ours in flight.
pub fn server_busy_reason(u: &CpuUsage, when: &str) -> Option<String> {
    (u.server_core_pct > SERVER_IDLE_MAX_CORE_PCT).then(|| {
        format!(
            "server busy {when} with no request of ours in flight: its processes used {:.0} % of a core (another client?)",
            u.server_core_pct
        )
    })
}

/// Records the CPU figures of measured trial `n` and invalidates it when the host or the server
/// was busy: `idle` is the window just before it ([`SERVER_IDLE_WINDOW`]), `during` the trial
/// itself; `limit_pct` is `O3_BUSY_CPU_PCT` when set, else [`default_busy_limit_pct`] for the
/// cell's `num_thread`.
pub fn check_trial_cpu(
    rec: &mut TrialRecord,
    n: u32,
    idle: Option<&CpuUsage>,
    during: Option<&CpuUsage>,
    limit_pct: Option<f64>,
    num_thread: u32,
) {
    rec.server_idle_cpu_pct = idle.map(|u| u.server_core_pct);
    rec.foreign_cpu_pct = during.map(|u| u.foreign_pct);
    let mut why = Vec::new();
    if let Some(u) = during {
        let limit = limit_pct.unwrap_or_else(|| default_busy_limit_pct(u.cpus, num_thread));
        why.extend(host_busy_reason(u, limit));
    }
    if let Some(u) = idle {
        why.extend(server_busy_reason(u, &format!("just before trial {n}")));
    }
    if !why.is_empty() {
        rec.valid = false;
        rec.invalid_reasons.extend(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::testutil::FakeProc;
    use rstest::rstest;

    const ME: u32 = 900;

    /// A 2-CPU host: server 100 with runner 101, the harness 900, a compiler 500.
    fn host(p: &FakeProc, user: u64, idle: u64, server: u64, runner: u64, own: u64) {
        p.cpu(user, 0, idle, 2)
            .stat(100, "o3-refserver", 1, server, 1000)
            .stat(101, "llama-server", 100, runner, 2000)
            .stat(ME, "busy_host", 1, own, 3000)
            .stat(500, "cc1", 1, 0, 500);
    }

    fn snap(p: &FakeProc, tree: &[u32]) -> CpuSnapshot {
        CpuSnapshot::read(&p.procfs(), tree, ME).expect("fake stat")
    }

    #[test]
    fn foreign_is_busy_minus_the_tree_and_the_harness() {
        let p = FakeProc::new();
        host(&p, 1000, 1000, 10, 100, 50);
        let a = snap(&p, &[100, 101]);
        // 200 ticks per CPU pass (400 in all): 300 busy, of which runner 150, server 2, us 8.
        host(&p, 1300, 1100, 12, 250, 58);
        let b = snap(&p, &[100, 101]);
        let u = usage(&a, &b).unwrap();
        assert_eq!((u.cpus, u.total_ticks), (2, 400));
        assert_eq!(u.machine_pct, 75.0);
        assert_eq!(u.server_core_pct, 76.0); // 152 of 200 ticks of one core
        assert_eq!(u.own_core_pct, 4.0);
        assert_eq!(u.foreign_pct, 35.0); // 140 of 400
        let limit = default_busy_limit_pct(u.cpus, 2);
        assert_eq!(
            host_busy_reason(&u, limit).as_deref(),
            Some("host busy: other processes used 35 % of the CPU (limit 12.5 %, O3_BUSY_CPU_PCT)")
        );
        assert_eq!(host_busy_reason(&u, 40.0), None);
    }

    #[test]
    fn a_quiet_host_is_not_busy() {
        let p = FakeProc::new();
        host(&p, 1000, 1000, 10, 100, 50);
        let a = snap(&p, &[100, 101]);
        // The runner takes both cores; 4 ticks of daemons.
        host(&p, 1390, 1010, 10, 480, 56);
        let u = usage(&a, &snap(&p, &[100, 101])).unwrap();
        assert_eq!(u.foreign_pct, 1.0);
        assert_eq!(host_busy_reason(&u, default_busy_limit_pct(2, 2)), None);
        assert!(server_busy_reason(&u, "x").is_some());
    }

    #[test]
    fn a_runner_started_in_the_interval_counts_whole_and_the_harness_once() {
        let p = FakeProc::new();
        host(&p, 1000, 1000, 10, 0, 50);
        // Before: no runner yet; the harness is the server itself (as in the monitor's tests).
        let a = CpuSnapshot::read(&p.procfs(), &[100], 100).unwrap();
        host(&p, 1200, 1200, 30, 150, 50);
        p.stat(101, "llama-server", 100, 150, 5000);
        let b = CpuSnapshot::read(&p.procfs(), &[100, 101, 100], 100).unwrap();
        assert_eq!(b.tree_pids().collect::<Vec<_>>(), [100, 101]);
        let u = usage(&a, &b).unwrap();
        // 200 busy of 400: server 20 + new runner 150, nothing of "ours" counted twice.
        assert_eq!((u.own_core_pct, u.foreign_pct), (0.0, 7.5));
    }

    #[test]
    fn a_recycled_pid_is_another_process() {
        let before = [ProcTicks {
            pid: 7,
            starttime: 1,
            ticks: 500,
        }];
        let same = ProcTicks {
            pid: 7,
            starttime: 1,
            ticks: 520,
        };
        let other = ProcTicks {
            starttime: 9,
            ticks: 30,
            ..same
        };
        assert_eq!(delta(&before, &same), 20);
        assert_eq!(delta(&before, &other), 30);
    }

    #[test]
    fn no_time_no_figure_and_no_stat_no_snapshot() {
        let p = FakeProc::new();
        host(&p, 1000, 1000, 10, 100, 50);
        let a = snap(&p, &[100]);
        assert_eq!(usage(&a, &a), None);
        let empty = FakeProc::new();
        assert_eq!(CpuSnapshot::read(&empty.procfs(), &[1], ME), None);
    }

    #[test]
    fn an_idle_server_is_not_busy_a_serving_one_is() {
        let p = FakeProc::new();
        host(&p, 1000, 1000, 10, 100, 50);
        let a = snap(&p, &[100, 101]);
        host(&p, 1002, 1198, 10, 101, 50);
        let idle = usage(&a, &snap(&p, &[100, 101])).unwrap();
        assert_eq!(server_busy_reason(&idle, "before trial 2"), None);
        host(&p, 1150, 1050, 10, 250, 50);
        let busy = usage(&a, &snap(&p, &[100, 101])).unwrap();
        assert_eq!(
            server_busy_reason(&busy, "before trial 2").as_deref(),
            Some(
                "server busy before trial 2 with no request of ours in flight: its processes used 150 % of a core (another client?)"
            )
        );
    }

    fn cpu(foreign_pct: f64, server_core_pct: f64) -> CpuUsage {
        CpuUsage {
            cpus: 2,
            total_ticks: 400,
            machine_pct: 0.0,
            server_core_pct,
            own_core_pct: 0.0,
            foreign_pct,
        }
    }

    #[test]
    fn a_trial_on_a_busy_host_or_server_is_invalid() {
        let valid = || TrialRecord {
            valid: true,
            ..TrialRecord::default()
        };
        let mut quiet = valid();
        check_trial_cpu(
            &mut quiet,
            1,
            Some(&cpu(0.0, 2.0)),
            Some(&cpu(3.0, 190.0)),
            None,
            2,
        );
        assert!(quiet.valid, "{:?}", quiet.invalid_reasons);
        assert_eq!(
            (quiet.foreign_cpu_pct, quiet.server_idle_cpu_pct),
            (Some(3.0), Some(2.0))
        );

        let mut busy = valid();
        check_trial_cpu(
            &mut busy,
            2,
            Some(&cpu(0.0, 80.0)),
            Some(&cpu(48.0, 150.0)),
            None,
            2,
        );
        assert!(!busy.valid);
        assert_eq!(
            busy.invalid_reasons,
            [
                "host busy: other processes used 48 % of the CPU (limit 12.5 %, O3_BUSY_CPU_PCT)",
                "server busy just before trial 2 with no request of ours in flight: its processes used 80 % of a core (another client?)"
            ]
        );
        // The configured limit replaces the default; 100 turns the guard off.
        let mut off = valid();
        check_trial_cpu(&mut off, 3, None, Some(&cpu(48.0, 150.0)), Some(100.0), 2);
        assert!(off.valid && off.server_idle_cpu_pct.is_none());
        // No figures (server not proven local): nothing judged, nothing recorded.
        let mut unknown = valid();
        check_trial_cpu(&mut unknown, 4, None, None, Some(1.0), 2);
        assert_eq!(unknown, valid());
    }

    /// The judgement of a cell whose decode is slow because the host was busy: INVALID with
    /// "host busy" in its reasons when most trials were busy, not the FAIL the slow figures
    /// alone would give (the rule of `judgement::too_few_valid`, unchanged).
    #[rstest]
    #[case(&[true, true, true], crate::results::Verdict::Invalid)]
    #[case(&[true, true, false], crate::results::Verdict::Invalid)]
    #[case(&[false, false, false], crate::results::Verdict::Fail)]
    fn a_mostly_busy_cell_is_invalid_not_fail(
        #[case] busy: &[bool],
        #[case] want: crate::results::Verdict,
    ) {
        use crate::results::{CellSpec, Gates, TrialKind};
        use crate::runner::{CellRun, Ran, assemble};
        let spec = CellSpec {
            test_name: "m::ctx_2k".into(),
            name: "m".into(),
            model: "m".into(),
            category: "c".into(),
            num_ctx: 2048,
            fill_tokens: 1024,
            num_batch: 512,
            num_thread: 2,
            num_predict: 32,
            gates: Gates {
                ttft_max_s: 8.0,
                tok_s_min: 10.0,
                stability_min: 0.0,
                ram_max_pct: 80.0,
            },
            use_case: "u".into(),
            optional: false,
            optimize: true,
            source: "m.csv:2".into(),
            relative_gates: None,
            probe: None,
        };
        let trials: Vec<TrialRecord> = busy
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let mut t = TrialRecord {
                    index: i as u32,
                    kind: TrialKind::Measured,
                    valid: true,
                    ttft_s: Some(1.0),
                    decode_tps: Some(5.7 + i as f64 * 0.1), // below the 10 tok/s gate
                    rss_after_bytes: Some(1 << 30),
                    ..TrialRecord::default()
                };
                let during = cpu(if b { 60.0 } else { 2.0 }, 190.0);
                check_trial_cpu(&mut t, i as u32 + 1, None, Some(&during), None, 2);
                t
            })
            .collect();
        let ran = Ran {
            trials,
            ..Ran::default()
        };
        let r = assemble(&spec, CellRun::Ran(Box::new(ran)), 1.0);
        let reasons = r.judgement.reasons();
        assert_eq!(r.verdict(), want, "{reasons:?}");
        let says_busy = reasons
            .iter()
            .any(|w| w.contains("host busy: other processes used 60 % of the CPU"));
        assert_eq!(
            says_busy,
            want == crate::results::Verdict::Invalid,
            "{reasons:?}"
        );
    }

    #[rstest]
    #[case(2, 2, 12.5)]
    #[case(2, 0, 12.5)]
    #[case(2, 8, 12.5)]
    #[case(4, 2, 56.25)]
    #[case(16, 8, 51.5625)]
    #[case(1, 1, 25.0)]
    #[case(0, 1, 25.0)]
    fn default_limit(#[case] cpus: u32, #[case] threads: u32, #[case] want: f64) {
        assert_eq!(default_busy_limit_pct(cpus, threads), want);
    }
}
