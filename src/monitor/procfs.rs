//! Linux `/proc` files: pure parsers over their text, and thin readers around them.
//!
//! Every parser takes the file's text and returns `None` (or skips a line) on anything it does
//! not understand; every reader returns `None` when the file is missing or unreadable (non-Linux,
//! a process that exited, no permission). Nothing here panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::results::MemoryFigures;

/// TCP state `LISTEN` in `/proc/net/tcp` (`st` column, hex).
const TCP_LISTEN: u8 = 0x0A;

/// One socket line of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcpSocket {
    /// Local address.
    pub addr: IpAddr,
    /// Local port.
    pub port: u16,
    /// Connection state (`0x0A` = LISTEN).
    pub state: u8,
    /// Socket inode, as in the `socket:[inode]` fd link.
    pub inode: u64,
}

impl TcpSocket {
    /// Whether the socket is listening.
    pub fn is_listen(&self) -> bool {
        self.state == TCP_LISTEN
    }
}

/// Decodes the kernel's hex address: IPv4 is one native-endian `u32`, IPv6 four of them.
fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    fn word(h: &str) -> Option<[u8; 4]> {
        Some(u32::from_str_radix(h, 16).ok()?.to_ne_bytes())
    }
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(hex.get(i * 8..i * 8 + 8)?)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6` text (header line skipped, bad lines ignored).
pub(crate) fn parse_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:tm retrnsmt uid timeout inode …
            if f.len() < 10 || !f[0].ends_with(':') {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            Some(TcpSocket {
                addr: parse_hex_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// LISTEN sockets on `port` from parsed socket tables.
pub(crate) fn listeners_on_port(sockets: &[TcpSocket], port: u16) -> Vec<TcpSocket> {
    sockets
        .iter()
        .filter(|s| s.is_listen() && s.port == port && s.inode != 0)
        .cloned()
        .collect()
}

/// A `/proc` tree: the real one, or a fake one that a test wrote (see `testutil::FakeProc`).
/// The readers the server search and the CPU accounting use go through it, so both can be
/// tested on `/proc` trees of any shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    /// The system's `/proc`.
    pub fn real() -> ProcFs {
        ProcFs {
            root: PathBuf::from("/proc"),
        }
    }

    /// A tree rooted at `root` (tests).
    #[cfg(test)]
    pub fn at(root: &Path) -> ProcFs {
        ProcFs {
            root: root.to_path_buf(),
        }
    }

    /// Where `net/tcp` is (tests remove it).
    #[cfg(test)]
    pub fn net_tcp_path(&self) -> PathBuf {
        self.path("net/tcp")
    }

    fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: impl AsRef<Path>) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    /// `net/tcp` and `net/tcp6`; `None` when neither can be read.
    pub fn net_tcp(&self) -> Option<Vec<TcpSocket>> {
        let v4 = self.read("net/tcp");
        let v6 = self.read("net/tcp6");
        if v4.is_none() && v6.is_none() {
            return None;
        }
        let mut all = parse_net_tcp(v4.as_deref().unwrap_or(""));
        all.extend(parse_net_tcp(v6.as_deref().unwrap_or("")));
        Some(all)
    }

    /// Numeric entries (all process ids); empty when the tree cannot be read.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// `<pid>/stat`, parsed.
    pub fn stat(&self, pid: u32) -> Option<ProcStat> {
        parse_stat(&self.read(format!("{pid}/stat"))?)
    }

    /// `<pid>/cmdline`, split.
    pub fn cmdline(&self, pid: u32) -> Option<Vec<String>> {
        Some(parse_cmdline(
            &std::fs::read(self.path(format!("{pid}/cmdline"))).ok()?,
        ))
    }

    /// The targets of `<pid>/fd/*` (`socket:[inode]`, paths, …); `None` when the directory
    /// cannot be listed — another user's process without privileges, or one that exited.
    pub fn fd_targets(&self, pid: u32) -> Option<Vec<String>> {
        let fds = std::fs::read_dir(self.path(format!("{pid}/fd"))).ok()?;
        Some(
            fds.filter_map(Result::ok)
                .filter_map(|fd| Some(std::fs::read_link(fd.path()).ok()?.to_str()?.to_string()))
                .collect(),
        )
    }

    /// `stat` (the machine's CPU times).
    pub fn proc_stat(&self) -> Option<CpuTimes> {
        parse_proc_stat(&self.read("stat")?)
    }
}

/// Value of a `Key:   123 kB` line, in bytes (the unit must be `kB` or absent).
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// Parses `/proc/<pid>/status`: `VmRSS`, `RssAnon`, `RssFile`, `VmSwap` (kB → bytes).
/// `None` without `VmRSS` (kernel threads, zombies).
pub(crate) fn parse_status(text: &str) -> Option<MemoryFigures> {
    Some(MemoryFigures {
        rss_bytes: kb_field(text, "VmRSS")?,
        anon_bytes: kb_field(text, "RssAnon"),
        file_bytes: kb_field(text, "RssFile"),
        swap_bytes: kb_field(text, "VmSwap"),
    })
}

/// Memory of one process from `/proc/<pid>/status`: `VmRSS`, `RssAnon`, `RssFile` (shared
/// memory, `RssShmem`, is not folded in) and `VmSwap`, in bytes. `None` when the process does not
/// exist, has no memory of its own (kernel thread, zombie), or the file cannot be read.
pub fn process_memory(pid: u32) -> Option<MemoryFigures> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Adds `b` to `a`: RSS always, each optional figure only while both sides have it.
pub(crate) fn add_memory(a: &mut MemoryFigures, b: &MemoryFigures) {
    fn add(x: Option<u64>, y: Option<u64>) -> Option<u64> {
        Some(x?.saturating_add(y?))
    }
    a.rss_bytes = a.rss_bytes.saturating_add(b.rss_bytes);
    a.anon_bytes = add(a.anon_bytes, b.anon_bytes);
    a.file_bytes = add(a.file_bytes, b.file_bytes);
    a.swap_bytes = add(a.swap_bytes, b.swap_bytes);
}

/// Memory of several processes summed; `None` when none of them could be read.
pub(crate) fn sum_memory(pids: &[u32]) -> Option<MemoryFigures> {
    let mut total: Option<MemoryFigures> = None;
    for m in pids.iter().filter_map(|&p| process_memory(p)) {
        match &mut total {
            Some(t) => add_memory(t, &m),
            None => total = Some(m),
        }
    }
    total
}

/// The fields of `/proc/<pid>/stat` the monitor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Command name (`comm`, at most 15 bytes, may hold spaces and parentheses).
    pub comm: String,
    /// State letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// User CPU time (clock ticks).
    pub utime: u64,
    /// System CPU time (clock ticks).
    pub stime: u64,
    /// Start time after boot (clock ticks); with the pid, identifies a process.
    pub starttime: u64,
}

impl ProcStat {
    /// `utime + stime` (clock ticks).
    pub fn cpu_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// Parses `/proc/<pid>/stat`. The command name sits in parentheses and may itself contain spaces
/// and parentheses, so the fields are read after the *last* `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_string();
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After ')': state(0) ppid(1) pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    // utime(11) stime(12) cutime cstime priority nice num_threads itrealvalue starttime(19)
    if f.len() < 20 {
        return None;
    }
    Some(ProcStat {
        comm,
        state: f[0].chars().next()?,
        ppid: f[1].parse().ok()?,
        utime: f[11].parse().ok()?,
        stime: f[12].parse().ok()?,
        starttime: f[19].parse().ok()?,
    })
}

/// Reads and parses `/proc/<pid>/stat`.
pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    ProcFs::real().stat(pid)
}

/// Parses `/proc/meminfo` into `(total, used)` bytes, used = `MemTotal − MemAvailable`.
/// Kernels before 3.14 have no `MemAvailable`; then `MemFree + Buffers + Cached` stands in.
pub(crate) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let total = kb_field(text, "MemTotal")?;
    let available = kb_field(text, "MemAvailable").or_else(|| {
        Some(
            kb_field(text, "MemFree")?
                + kb_field(text, "Buffers").unwrap_or(0)
                + kb_field(text, "Cached").unwrap_or(0),
        )
    })?;
    Some((total, total.saturating_sub(available)))
}

/// System memory from `/proc/meminfo`: `(total_bytes, used_bytes)` with used =
/// `MemTotal − MemAvailable`. `None` when the file is missing (non-Linux) or malformed.
pub fn system_memory() -> Option<(u64, u64)> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// Aggregate CPU times from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Ticks spent busy (everything except idle and iowait).
    pub busy: u64,
    /// All ticks (user … steal; guest time is already inside user).
    pub total: u64,
    /// Number of `cpuN` lines (logical CPUs online).
    pub cpus: u32,
}

/// Parses `/proc/stat`'s `cpu` line and counts the `cpuN` lines.
pub(crate) fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let mut lines = text.lines();
    let first = lines.next()?;
    let mut it = first.split_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = it.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let cpus = lines
        .take_while(|l| l.starts_with("cpu"))
        .filter(|l| l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32;
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
        cpus: cpus.max(1),
    })
}

/// Reads `/proc/stat`.
pub(crate) fn read_proc_stat() -> Option<CpuTimes> {
    ProcFs::real().proc_stat()
}

/// System CPU use between two readings, in percent of one core (so a fully busy 8-CPU machine
/// is 800 %). `None` when no time passed.
pub(crate) fn system_cpu_pct(prev: &CpuTimes, now: &CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total)?;
    if total == 0 {
        return None;
    }
    let busy = now.busy.saturating_sub(prev.busy).min(total);
    Some(busy as f64 / total as f64 * f64::from(now.cpus) * 100.0)
}

/// Splits `/proc/<pid>/cmdline` (NUL-separated) into its arguments.
pub(crate) fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Reads `/proc/<pid>/cmdline` (empty for zombies and kernel threads).
pub(crate) fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    ProcFs::real().cmdline(pid)
}

/// Whether an argument list carries a model: an argument `--model` or `--model=…`.
pub(crate) fn has_model_arg(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "--model" || a.starts_with("--model="))
}

/// Numeric entries of `/proc` (all process ids); empty when `/proc` cannot be read.
pub(crate) fn all_pids() -> Vec<u32> {
    ProcFs::real().pids()
}

/// Parses `/proc/thread-self/schedstat`: time on CPU in nanoseconds (first field).
pub(crate) fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// CPU time the calling thread has used so far, in seconds: `/proc/thread-self/schedstat`
/// (nanoseconds) when present, else `utime + stime` of `/proc/thread-self/stat` (clock ticks).
pub(crate) fn thread_cpu_s() -> Option<f64> {
    if let Some(ns) = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| parse_schedstat(&t))
    {
        return Some(ns as f64 / 1e9);
    }
    let st = parse_stat(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)?;
    Some(st.cpu_ticks() as f64 / clock_ticks_per_s() as f64)
}

/// Clock ticks per second (`getconf CLK_TCK`, asked once per process; 100 when it cannot be
/// asked, which is what Linux uses on every common architecture).
pub(crate) fn clock_ticks_per_s() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // Lines as the kernel prints them (x86-64, little-endian): a LISTEN socket on
    // 127.0.0.1:11434, an established connection to it, and a LISTEN socket on another port.
    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 48113 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20011 1 0000000000000000 100 0 0 10 0
   2: 0100007F:2CAA 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000   998        0 77001 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D2F0 0100007F:2CAA 01 00000000:00000000 00:00000000 00000000  1000        0 77000 1 0000000000000000 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2CAA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 51234 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 60001 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2CAA 0000000000000000FFFF00000100007F:C000 06 00000000:00000000 03:00000ECB 00000000     0        0 0 3 0000000000000000
";

    #[cfg(target_endian = "little")]
    #[test]
    fn tcp4_listen_entry_for_11434() {
        let all = parse_net_tcp(TCP4);
        assert_eq!(all.len(), 4, "header skipped, four sockets");
        let l = listeners_on_port(&all, 11434);
        assert_eq!(
            l.len(),
            1,
            "established sockets on the port are not listeners: {l:?}"
        );
        assert_eq!(l[0].inode, 48113);
        assert_eq!(l[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(listeners_on_port(&all, 22)[0].inode, 20011);
        assert!(listeners_on_port(&all, 53999).is_empty());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn tcp6_listen_entry_for_11434() {
        let all = parse_net_tcp(TCP6);
        assert_eq!(all.len(), 3);
        let l = listeners_on_port(&all, 11434);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].inode, 51234);
        assert_eq!(l[0].addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let l = listeners_on_port(&all, 8080);
        assert_eq!(l[0].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        // TIME_WAIT (06) with inode 0 on the port is not a listener; its v4-mapped address parses.
        assert_eq!(
            all[2].addr,
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        );
    }

    #[rstest]
    #[case("")]
    #[case("garbage line\n")]
    #[case("   0: 0100007F:ZZZZ 00000000:0000 0A 0 0 0 0 0 48113\n")]
    #[case("   0: 0100007F 00000000:0000 0A 0 0 0 0 0 48113\n")]
    #[case("   0: 0100007F:2CAA 00000000:0000 0A 0 0 0 0 0\n")]
    fn tcp_junk_is_skipped(#[case] text: &str) {
        assert!(parse_net_tcp(text).is_empty());
    }

    const STATUS: &str = "Name:\tllama-server
Umask:\t0022
State:\tS (sleeping)
Pid:\t5678
PPid:\t1234
VmPeak:\t 9120412 kB
VmSize:\t 9120412 kB
VmHWM:\t 5312300 kB
VmRSS:\t 5212300 kB
RssAnon:\t  712300 kB
RssFile:\t 4500000 kB
RssShmem:\t       0 kB
VmSwap:\t     128 kB
Threads:\t9
";

    #[test]
    fn status_figures_in_bytes() {
        let m = parse_status(STATUS).unwrap();
        assert_eq!(m.rss_bytes, 5_212_300 * 1024);
        assert_eq!(m.anon_bytes, Some(712_300 * 1024));
        assert_eq!(m.file_bytes, Some(4_500_000 * 1024));
        assert_eq!(m.swap_bytes, Some(128 * 1024));
    }

    #[test]
    fn status_without_split_or_rss() {
        // Kernels before 4.5 have no RssAnon/RssFile.
        let old = "Name:\tx\nVmRSS:\t  2048 kB\nVmSwap:\t 0 kB\n";
        let m = parse_status(old).unwrap();
        assert_eq!(m.rss_bytes, 2 << 20);
        assert_eq!((m.anon_bytes, m.file_bytes), (None, None));
        assert_eq!(m.swap_bytes, Some(0));
        // Kernel threads and zombies have no VmRSS line.
        assert_eq!(parse_status("Name:\tkworker/0:1\nState:\tI (idle)\n"), None);
        assert_eq!(parse_status("VmRSS:\t 12 MB\n"), None, "unknown unit");
    }

    #[test]
    fn memory_sums_keep_unknowns_unknown() {
        let mut a = parse_status(STATUS).unwrap();
        let b = MemoryFigures {
            rss_bytes: 10,
            anon_bytes: Some(4),
            file_bytes: None,
            swap_bytes: Some(1),
        };
        add_memory(&mut a, &b);
        assert_eq!(a.rss_bytes, 5_212_300 * 1024 + 10);
        assert_eq!(a.anon_bytes, Some(712_300 * 1024 + 4));
        assert_eq!(a.file_bytes, None);
        assert_eq!(a.swap_bytes, Some(128 * 1024 + 1));
    }

    #[rstest]
    #[case::plain(
        "5678 (llama-server) S 1234 5678 1234 0 -1 4194560 100 0 0 0 1500 250 0 0 20 0 9 0 987654 9339301888 1303075 18446744073709551615",
        "llama-server",
        'S',
        1234,
        1500,
        250,
        987654
    )]
    #[case::spaces_and_parens(
        "42 (my (odd) proc) ) R 7 42 7 0 -1 4194304 5 0 0 0 11 22 0 0 20 0 1 0 333 3133440 381 18446744073709551615",
        "my (odd) proc) ",
        'R',
        7,
        11,
        22,
        333
    )]
    fn stat_fields_after_last_paren(
        #[case] text: &str,
        #[case] comm: &str,
        #[case] state: char,
        #[case] ppid: u32,
        #[case] utime: u64,
        #[case] stime: u64,
        #[case] starttime: u64,
    ) {
        let s = parse_stat(text).unwrap();
        assert_eq!(s.comm, comm);
        assert_eq!(s.state, state);
        assert_eq!(s.ppid, ppid);
        assert_eq!((s.utime, s.stime, s.starttime), (utime, stime, starttime));
        assert_eq!(s.cpu_ticks(), utime + stime);
    }

    #[rstest]
    #[case("")]
    #[case("12 (x) S 1 2 3")]
    #[case("12 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20")]
    fn stat_junk_is_none(#[case] text: &str) {
        assert_eq!(parse_stat(text), None);
    }

    #[test]
    fn meminfo_used_is_total_minus_available() {
        let text = "MemTotal:       24684084 kB
MemFree:        21203784 kB
MemAvailable:   23412684 kB
Buffers:           12345 kB
Cached:          2000000 kB
";
        let (total, used) = parse_meminfo(text).unwrap();
        assert_eq!(total, 24_684_084 * 1024);
        assert_eq!(used, (24_684_084 - 23_412_684) * 1024);
        // Without MemAvailable: free + buffers + cached.
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        assert_eq!(parse_meminfo(old), Some((1000 * 1024, 600 * 1024)));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn proc_stat_and_system_cpu() {
        let a = parse_proc_stat(
            "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2\n",
        )
        .unwrap();
        assert_eq!((a.busy, a.total, a.cpus), (150, 1000, 2));
        // 100 more ticks, 50 of them busy, on 2 CPUs → half the machine → 100 % of one core.
        let b = CpuTimes {
            busy: 200,
            total: 1100,
            cpus: 2,
        };
        assert_eq!(system_cpu_pct(&a, &b), Some(100.0));
        assert_eq!(system_cpu_pct(&a, &a), None);
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
    }

    #[test]
    fn cmdline_and_model_arg() {
        let args =
            parse_cmdline(b"/usr/lib/ollama/llama-server\0--model\0/b/sha256-1\0--port\x0039\0");
        assert_eq!(args.len(), 5);
        assert!(has_model_arg(&args));
        assert!(has_model_arg(&parse_cmdline(
            b"ollama\0runner\0--model=/x\0"
        )));
        // GPU discovery helpers carry no model; --model-draft is not --model.
        assert!(!has_model_arg(&parse_cmdline(
            b"ollama\0runner\0--ollama-engine\0--port\x001\0"
        )));
        assert!(!has_model_arg(&parse_cmdline(b"x\0--model-draft\0y\0")));
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn schedstat_first_field() {
        assert_eq!(parse_schedstat("328626051 1085137 35\n"), Some(328_626_051));
        assert_eq!(parse_schedstat(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn live_readers_on_this_process() {
        let me = std::process::id();
        let m = process_memory(me).expect("own /proc/<pid>/status");
        assert!(m.rss_bytes > 0);
        assert!(m.anon_bytes.is_some_and(|a| a > 0 && a <= m.rss_bytes));
        let st = read_stat(me).expect("own stat");
        assert_eq!(st.ppid, std::os::unix::process::parent_id());
        let (total, used) = system_memory().expect("/proc/meminfo");
        assert!(used > 0 && used < total, "{used} of {total}");
        assert!(thread_cpu_s().is_some_and(|s| s >= 0.0));
        assert!(clock_ticks_per_s() >= 1);
        assert!(all_pids().contains(&me));
        assert_eq!(process_memory(u32::MAX), None);
    }
}
