//! Finding the server's processes: the process that holds the socket listening on the base
//! URL's port — only that one; a process named like a server is never taken for it — and its
//! runner children (see `docs/ollama-api.md` §5).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use super::procfs::{
    ProcFs, TcpSocket, all_pids, has_model_arg, listeners_on_port, read_cmdline, read_stat,
};

/// A server process that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`comm`), `?` when unreadable.
    pub comm: String,
}

/// What [`locate_server`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Locate {
    /// The server process on this host.
    Found(Located),
    /// The base URL names another host: `host:port`.
    NotLocal(String),
    /// The host is local (or unknown) but no server process was found: why.
    NotFound(String),
}

/// Splits a base URL (`http://host:port`, `https://[v6]:port/…`, `host:port`) into host (without
/// brackets) and port. A missing port is 11434 without a scheme, else 80 / 443, as in
/// [`crate::config::normalize_host`].
pub(crate) fn split_host_port(base_url: &str) -> Option<(String, u16)> {
    let s = base_url.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((sc, r)) => (Some(sc.to_ascii_lowercase()), r),
        None => (None, s),
    };
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?; // drop user:pass@
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match (port, scheme.as_deref()) {
        (Some(p), _) => p.parse().ok()?,
        (None, Some("https")) => 443,
        (None, Some(_)) => 80,
        (None, None) => 11434,
    };
    Some((host.to_string(), port))
}

/// An IPv4-mapped IPv6 address as IPv4, anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` belongs to this host: loopback, unspecified, or an address a socket can be
/// bound to (binding only succeeds on the host's own addresses).
pub(crate) fn is_local_ip(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The addresses of `host` that belong to this host (empty when the host is remote or cannot be
/// resolved). `localhost` is answered without a resolver.
pub(crate) fn local_addrs(host: &str, port: u16) -> Vec<IpAddr> {
    let candidates: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![ip]
    } else if host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
    {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    } else {
        (host, port)
            .to_socket_addrs()
            .map(|it| it.map(|a| a.ip()).collect())
            .unwrap_or_default()
    };
    candidates
        .into_iter()
        .map(canonical)
        .filter(|&ip| is_local_ip(ip))
        .collect()
}

/// Whether a connection to one of `targets` would reach a socket listening on `listen`.
fn reaches(listen: IpAddr, targets: &[IpAddr]) -> bool {
    let listen = canonical(listen);
    listen.is_unspecified()
        || targets
            .iter()
            .any(|&t| t.is_unspecified() || canonical(t) == listen)
}

/// LISTEN sockets on `port` that a connection to `targets` would reach.
pub(crate) fn reachable_listeners(
    sockets: &[TcpSocket],
    port: u16,
    targets: &[IpAddr],
) -> Vec<TcpSocket> {
    listeners_on_port(sockets, port)
        .into_iter()
        .filter(|s| reaches(s.addr, targets))
        .collect()
}

/// Who holds a listening socket, as far as `/proc/*/fd` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// The process holding it (the topmost when a parent and its child share it).
    Seen(u32),
    /// No visible process holds it: how many processes' fds could not be listed.
    Hidden { unreadable: usize },
}

/// The process holding one of the socket `inodes` open (scans `<pid>/fd`; processes of other
/// users are invisible without privileges). When a parent and its child share the socket, the
/// parent is returned.
fn socket_owner(proc: &ProcFs, inodes: &[u64]) -> Owner {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut owners = Vec::new();
    let mut unreadable = 0;
    for pid in proc.pids() {
        match proc.fd_targets(pid) {
            Some(targets) if targets.iter().any(|t| wanted.contains(t)) => owners.push(pid),
            Some(_) => {}
            None => unreadable += 1,
        }
    }
    let topmost = owners
        .iter()
        .copied()
        .find(|&p| proc.stat(p).is_none_or(|s| !owners.contains(&s.ppid)));
    match topmost.or_else(|| owners.iter().copied().min()) {
        Some(pid) => Owner::Seen(pid),
        None => Owner::Hidden { unreadable },
    }
}

/// Whether an argument list looks like an Ollama server (`ollama serve`) or the reference server.
pub(crate) fn is_server_cmdline(args: &[String]) -> bool {
    let Some(argv0) = args.first() else {
        return false;
    };
    let base = argv0.rsplit(['/', '\\']).next().unwrap_or(argv0);
    let base = base.strip_suffix(".exe").unwrap_or(base);
    (base == "ollama" && args.iter().skip(1).any(|a| a == "serve")) || base == "o3-refserver"
}

/// Processes named like a server, lowest pid first: named in a fallback's reason, never
/// measured — a name does not say which port a process serves.
fn servers_by_name(proc: &ProcFs) -> Vec<u32> {
    let mut found: Vec<u32> = proc
        .pids()
        .into_iter()
        .filter(|&p| proc.cmdline(p).is_some_and(|a| is_server_cmdline(&a)))
        .collect();
    found.sort_unstable();
    found
}

/// `; server-named processes here, not proven to serve it: [..]` when there are any.
fn unproven_hint(proc: &ProcFs) -> String {
    let named = servers_by_name(proc);
    if named.is_empty() {
        String::new()
    } else {
        format!(
            "; processes named like a server run here ({named:?}) but none is proven to serve it"
        )
    }
}

/// Finds the server process for `base_url`, saying why when it cannot.
pub(crate) fn locate_server(base_url: &str) -> Locate {
    locate_server_in(&ProcFs::real(), base_url)
}

/// [`locate_server`] on the `/proc` tree `proc`. Only the process that holds the listening
/// socket is the server: when that cannot be seen nothing is attributed (issue 7: a fallback by
/// name charged another server's RAM and CPU to a cell).
pub(crate) fn locate_server_in(proc: &ProcFs, base_url: &str) -> Locate {
    let Some((host, port)) = split_host_port(base_url) else {
        return Locate::NotFound(format!("cannot read host and port from {base_url:?}"));
    };
    let label = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let targets = local_addrs(&host, port);
    if targets.is_empty() {
        return Locate::NotLocal(label);
    }
    let Some(sockets) = proc.net_tcp() else {
        return Locate::NotFound(format!(
            "no /proc/net/tcp on this system: the process serving {label} cannot be proven{}",
            unproven_hint(proc)
        ));
    };
    let listeners = reachable_listeners(&sockets, port, &targets);
    if listeners.is_empty() {
        return Locate::NotFound(format!("nothing listens on {label} on this host"));
    }
    let inodes: Vec<u64> = listeners.iter().map(|s| s.inode).collect();
    match socket_owner(proc, &inodes) {
        Owner::Seen(pid) => Locate::Found(Located {
            pid,
            comm: proc.stat(pid).map_or_else(|| "?".to_string(), |s| s.comm),
        }),
        Owner::Hidden { unreadable } => Locate::NotFound(format!(
            "a socket listens on {label} but no visible process holds it ({unreadable} \
             process(es) whose open files cannot be read: another user's?){}",
            unproven_hint(proc)
        )),
    }
}

/// Finds the server process: the process listening on the base URL's TCP port (LISTEN sockets on
/// that port in `/proc/net/tcp` and `tcp6` → socket inode → the process whose `/proc/*/fd` holds
/// `socket:[inode]`). `None` for a host that is not this one, when nothing listens on the port
/// here, and when the socket's holder cannot be seen (another user's process): a process is
/// never taken for the server by its name (also on systems without `/proc`).
pub fn find_server_pid(base_url: &str) -> Option<u32> {
    match locate_server(base_url) {
        Locate::Found(l) => Some(l.pid),
        Locate::NotLocal(_) | Locate::NotFound(_) => None,
    }
}

/// Direct children of `pid`: from `/proc/<pid>/task/*/children` when the kernel offers it, else
/// by scanning every process's parent id.
fn children_of(pid: u32) -> Vec<u32> {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut seen_file = false;
        let mut kids = Vec::new();
        for task in tasks.filter_map(Result::ok) {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                seen_file = true;
                kids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        if seen_file {
            return kids;
        }
    }
    all_pids()
        .into_iter()
        .filter(|&p| read_stat(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// Runner children of `server_pid`: its direct children whose `/proc/<pid>/cmdline` has a
/// `--model` argument (Ollama v0.30+: `llama-server --model …`; v0.5.8–v0.29:
/// `ollama runner --model …`; see `docs/ollama-api.md` §5). Transient helpers without `--model`
/// (GPU discovery) are ignored, as are zombies. Sorted by pid; empty when there are none or
/// `/proc` cannot be read.
pub fn find_runners(server_pid: u32) -> Vec<u32> {
    runners_among(children_of(server_pid), |p| {
        read_cmdline(p).is_some_and(|a| has_model_arg(&a))
    })
}

/// The pids among `children` that `is_runner` accepts, each once, in ascending order. A child
/// can be listed twice: `children_of` reads one `children` file per server thread, and a child
/// whose parent thread exits meanwhile is re-parented to another thread of the server.
fn runners_among(children: Vec<u32>, is_runner: impl Fn(u32) -> bool) -> Vec<u32> {
    let unique: BTreeSet<u32> = children.into_iter().filter(|&p| is_runner(p)).collect();
    unique.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::procfs::parse_cmdline;
    use crate::monitor::testutil::{
        FakeProc, child_pid, kill, lock_tree, spawn_runner, spawn_sh, wait_until,
    };
    use rstest::rstest;
    use std::net::TcpListener;
    use std::time::Duration;

    /// Host and port of a base URL; `None` for one that names no host or no valid port.
    #[rstest]
    #[case("http://127.0.0.1:11434", Some(("127.0.0.1", 11434)))]
    #[case("http://[::1]:5000", Some(("::1", 5000)))]
    #[case("https://example.local", Some(("example.local", 443)))]
    #[case("http://example.local/api", Some(("example.local", 80)))]
    #[case("localhost", Some(("localhost", 11434)))]
    #[case("10.0.0.5:8080", Some(("10.0.0.5", 8080)))]
    #[case("", None)]
    #[case("http://:80", None)]
    #[case("http://host:notaport", None)]
    #[case("http://[::1", None)]
    fn host_and_port(#[case] url: &str, #[case] want: Option<(&str, u16)>) {
        let want = want.map(|(host, port)| (host.to_string(), port));
        assert_eq!(split_host_port(url), want, "{url:?}");
    }

    #[rstest]
    #[case("127.0.0.1", true)]
    #[case("::1", true)]
    #[case("0.0.0.0", true)]
    #[case("localhost", true)]
    // TEST-NET-1 (RFC 5737) is never assigned to a real interface.
    #[case("192.0.2.1", false)]
    #[case("2001:db8::1", false)]
    fn locality(#[case] host: &str, #[case] local: bool) {
        assert_eq!(!local_addrs(host, 11434).is_empty(), local, "{host}");
    }

    #[test]
    fn listeners_must_be_reachable_from_the_target() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let sock = |addr, inode| TcpSocket {
            addr,
            port: 11434,
            state: 0x0A,
            inode,
        };
        let sockets = [
            sock(v4(192, 168, 1, 5), 1),
            sock(v4(127, 0, 0, 1), 2),
            sock(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 3),
        ];
        let inodes = |t: &[IpAddr]| -> Vec<u64> {
            reachable_listeners(&sockets, 11434, t)
                .iter()
                .map(|s| s.inode)
                .collect()
        };
        assert_eq!(inodes(&[v4(127, 0, 0, 1)]), vec![2, 3]);
        assert_eq!(inodes(&[v4(192, 168, 1, 5)]), vec![1, 3]);
        assert_eq!(inodes(&[v4(0, 0, 0, 0)]), vec![1, 2, 3]);
        assert!(reachable_listeners(&sockets, 80, &[v4(127, 0, 0, 1)]).is_empty());
    }

    #[rstest]
    #[case(b"/usr/local/bin/ollama\0serve\0", true)]
    #[case(b"ollama\0serve\0", true)]
    #[case(b"C:\\Program Files\\Ollama\\ollama.exe\0serve\0", true)]
    #[case(
        b"/work/target/release/o3-refserver\0--listen\x00127.0.0.1:11434\0",
        true
    )]
    #[case(b"ollama\0run\0gemma3\0", false)]
    #[case(b"/usr/lib/ollama/llama-server\0--model\0x\0", false)]
    #[case(b"", false)]
    fn server_names(#[case] raw: &[u8], #[case] is_server: bool) {
        assert_eq!(is_server_cmdline(&parse_cmdline(raw)), is_server);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_listener_is_found() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        assert_eq!(find_server_pid(&url), Some(std::process::id()));
        match locate_server(&url) {
            Locate::Found(found) => assert_eq!(found.pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        // `localhost` reaches a 127.0.0.1 listener too.
        assert_eq!(
            find_server_pid(&format!("http://localhost:{port}")),
            Some(std::process::id())
        );
        drop(l);
        // Nothing listens there any more: no name fallback to some other server.
        assert_eq!(find_server_pid(&url), None);
    }

    const URL: &str = "http://127.0.0.1:11504";

    /// A fake host where 127.0.0.1:11504 listens (socket inode 5555), an `o3-refserver` (pid
    /// 100) and an `ollama serve` (pid 200, holding another port's socket 7777) run, and `owner`
    /// decides whether pid 100's open files can be read and hold the listening socket.
    fn host_with_servers(owner_visible: bool) -> FakeProc {
        let p = FakeProc::new();
        p.listen(11504, 5555)
            .process(
                100,
                "o3-refserver",
                1,
                10,
                &["/opt/o3-refserver", "--listen", "x"],
            )
            .process(200, "ollama", 1, 10, &["/usr/bin/ollama", "serve"])
            .fds(200, &[7777])
            .process(300, "bash", 1, 10, &["bash"])
            .fds(300, &[]);
        if owner_visible {
            p.fds(100, &[5555]);
        }
        p
    }

    #[test]
    fn the_socket_holder_is_the_server() {
        let p = host_with_servers(true);
        assert_eq!(
            locate_server_in(&p.procfs(), URL),
            Locate::Found(Located {
                pid: 100,
                comm: "o3-refserver".into()
            })
        );
    }

    /// Issue 7 item 2: the holder of the listening socket is hidden (another user's process), so
    /// nothing is attributed — not the `ollama serve` that serves another port, not the
    /// `o3-refserver` whose files cannot be read — and the reason names them.
    #[test]
    fn a_hidden_socket_holder_is_never_replaced_by_a_name() {
        let p = host_with_servers(false);
        let Locate::NotFound(why) = locate_server_in(&p.procfs(), URL) else {
            panic!("attributed a process that is not proven to serve the port");
        };
        assert!(
            why.starts_with(
                "a socket listens on 127.0.0.1:11504 but no visible process holds it (1 process(es)"
            ),
            "{why}"
        );
        assert!(
            why.ends_with("run here ([100, 200]) but none is proven to serve it"),
            "{why}"
        );
    }

    #[test]
    fn without_net_tcp_nothing_is_proven() {
        let p = host_with_servers(true);
        std::fs::remove_file(p.procfs().net_tcp_path()).unwrap();
        let Locate::NotFound(why) = locate_server_in(&p.procfs(), URL) else {
            panic!("attributed a process without a socket table");
        };
        assert!(why.starts_with("no /proc/net/tcp on this system"), "{why}");
    }

    #[test]
    fn nothing_listening_is_not_found_even_with_servers_running() {
        let p = host_with_servers(true);
        assert_eq!(
            locate_server_in(&p.procfs(), "http://127.0.0.1:11505"),
            Locate::NotFound("nothing listens on 127.0.0.1:11505 on this host".into())
        );
    }

    #[test]
    fn remote_host_is_not_local() {
        assert_eq!(
            locate_server("http://192.0.2.1:11434"),
            Locate::NotLocal("192.0.2.1:11434".into())
        );
        assert_eq!(find_server_pid("http://192.0.2.1:11434"), None);
        assert!(matches!(locate_server("http://:1"), Locate::NotFound(_)));
    }

    #[test]
    fn runners_are_unique_and_sorted_whatever_the_listing_order() {
        // Duplicates that are not adjacent: a dedup without sorting would keep them.
        let children = vec![9, 3, 7, 9, 12, 3];
        assert_eq!(runners_among(children, |p| p != 7), [3, 9, 12]);
        assert!(runners_among(vec![4, 4], |_| false).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn runners_are_children_with_model() {
        let _tree = lock_tree();
        let runner = spawn_runner();
        let helper = spawn_sh(&["--port", "1234"]);
        let me = std::process::id();
        // The shell's argv is set when it execs, a moment after spawn. The wait ends as soon as
        // the runner shows; its limit is only reached when it never does (10 s: far beyond an
        // exec on a loaded machine, which takes milliseconds).
        let want = child_pid(&runner);
        wait_until(Duration::from_secs(10), || find_runners(me).contains(&want));
        let found = find_runners(me);
        assert_eq!(
            found,
            vec![child_pid(&runner)],
            "helper {}",
            child_pid(&helper)
        );
        // The helper has no children at all.
        assert!(find_runners(child_pid(&helper)).is_empty());
        kill(runner);
        assert!(find_runners(me).is_empty());
        drop(helper);
    }
}
