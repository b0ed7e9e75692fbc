//! The public listener of the tollgate proxy: accepts connections, reads the request head,
//! runs [`proxy::handle`] with the key's limiter shard and an HTTP forwarder, writes the
//! answer and records it. One request per connection; a fixed pool of worker threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::AdminState;
use crate::config::{Config, Upstream};
use crate::metrics;
use crate::proxy::{self, Forward, Outcome, Picker, Request, ANONYMOUS_KEY, CLIENT_KEY_HEADER};

/// Worker threads serving connections.
pub const WORKER_THREADS: usize = 24;

/// Longest request head read (request line and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Set by the SIGTERM handler: stop accepting, finish what is in flight.
pub static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Forwards over plain HTTP/1.1 with the configured header timeout.
struct HttpForward {
    header_timeout: Duration,
}

impl Forward for HttpForward {
    fn forward(&mut self, to: &Upstream, req: &Request) -> Result<u16, String> {
        let mut s = TcpStream::connect_timeout(&to.address, self.header_timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(self.header_timeout)).map_err(|e| e.to_string())?;
        write!(s, "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", req.route, to.address)
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).map_err(|e| e.to_string())?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "no status line".to_string())
    }
}

/// The route, client key and body length of a request head; None when it is malformed.
pub fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (_method, target) = (first.next()?, first.next()?);
    let mut req = Request {
        route: target.split('?').next().unwrap_or(target).to_string(),
        client_key: None,
        body_len: 0,
    };
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case(CLIENT_KEY_HEADER) && !value.is_empty() {
            req.client_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            req.body_len = value.parse().ok()?;
        }
    }
    Some(req)
}

fn respond(stream: &mut TcpStream, outcome: &Outcome) -> std::io::Result<()> {
    let extra = match outcome {
        Outcome::TooManyRequests { retry_after_s } => format!("retry-after: {retry_after_s}\r\n"),
        _ => String::new(),
    };
    write!(stream, "HTTP/1.1 {} \r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n", outcome.status())
}

fn serve_one(cfg: &Config, state: &AdminState, picker: &Mutex<Picker>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = String::new();
    let mut reader = BufReader::new(stream.try_clone()?).take(MAX_HEAD_BYTES as u64);
    while reader.read_line(&mut head)? > 2 {}
    let Some(req) = parse_head(&head) else {
        return write!(stream, "HTTP/1.1 400 \r\ncontent-length: 0\r\n\r\n");
    };
    if req.body_len > cfg.max_body_bytes {
        return write!(stream, "HTTP/1.1 413 \r\ncontent-length: 0\r\n\r\n");
    }
    let key = req.client_key.clone().unwrap_or_else(|| ANONYMOUS_KEY.to_string());
    state.recent.lock().expect("recent lock").note_key(&key);
    let t0 = Instant::now();
    let mut fwd = HttpForward { header_timeout: cfg.header_timeout };
    let outcome = state.limiter.with_shard(&key, |limiter| {
        let mut picker = picker.lock().expect("picker lock");
        proxy::handle(cfg, limiter, &mut picker, &mut fwd, &req, t0)
    });
    metrics::record_outcome(&outcome, t0.elapsed().as_millis() as u64);
    respond(&mut stream, &outcome)
}

/// Serves `cfg.listen_port` until SIGTERM, then waits up to `grace` for the workers.
pub fn run(cfg: &Config, state: Arc<AdminState>, grace: Duration) -> ExitCode {
    let listener = match TcpListener::bind(("0.0.0.0", cfg.listen_port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tollgate: port {}: {e}", cfg.listen_port);
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = mpsc::sync_channel::<TcpStream>(WORKER_THREADS * 4);
    let rx = Arc::new(Mutex::new(rx));
    let picker = Arc::new(Mutex::new(Picker::new(cfg.upstreams.len())));
    let workers: Vec<_> = (0..WORKER_THREADS)
        .map(|_| {
            let (rx, state, picker, cfg) = (Arc::clone(&rx), Arc::clone(&state), Arc::clone(&picker), cfg.clone());
            thread::spawn(move || loop {
                let Ok(stream) = rx.lock().expect("queue lock").recv() else { return };
                if let Err(e) = serve_one(&cfg, &state, &picker, stream) {
                    eprintln!("tollgate: {e}");
                }
            })
        })
        .collect();
    for stream in listener.incoming().flatten() {
        if SHUTTING_DOWN.load(Ordering::SeqCst) || tx.send(stream).is_err() {
            break;
        }
    }
    drop(tx);
    let deadline = Instant::now() + grace;
    for w in workers {
        while !w.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
    ExitCode::SUCCESS
}
