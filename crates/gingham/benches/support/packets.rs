//! Packet helpers shared by the benchmarks. A benchmark re-executes itself inside a network
//! namespace (`ip netns exec NS taskset -c CPU <bench> --bench MODE ARGS`, with [`HELPER_ENV`]
//! set), and its `main` hands the arguments to [`helper`], which runs one mode there:
//!
//! - `tcp-server`: accepts on port 80, echoes one byte, closes (the other side of `crr`).
//! - `crr ADDR SECS`: new TCP connections per second to ADDR:80 (connect, one byte each way,
//!   close), as netperf's TCP_CRR; prints the rate.
//! - `udp-server poll|block` / `udp ADDR SECS`: 64-byte datagrams to port 5353 from one
//!   connected socket; the sender prints how many it sent and the CPU time its thread spent
//!   (nanoseconds), the server how many it received. `poll`: the server never sleeps (it polls a
//!   non-blocking socket), so no datagram wakes it and the sender's CPU pays for the path alone;
//!   `block`: it sleeps in `recv`, and the sender's CPU also pays for waking it.
//! - `stream-server`: accepts on port 5201 and counts what it reads until the sender closes, then
//!   answers with the count (so the sender's figure is what arrived, not what was buffered).
//! - `stream ADDR SECS`: one TCP stream to ADDR:5201 for SECS seconds; prints bits per second.
//! - `rr-server`: accepts on port 5202 and echoes every byte it reads (the other side of `rr`).
//! - `rr ADDR SECS`: one TCP connection to ADDR:5202, one byte each way per transaction, as
//!   netperf's TCP_RR; prints transactions per second.
//! - `first-connect ADDR TIMEOUT_SECS`: tries TCP connections to ADDR:80 every few milliseconds
//!   and exits 0 at the first that connects (1 if none did in time): the caller times its exit.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set in a helper's environment: `main` runs [`helper`] instead of the benchmark.
pub const HELPER_ENV: &str = "GINGHAM_BENCH_HELPER";

/// If this process is a helper, runs it and returns true.
pub fn run_if_helper(args: &[String]) -> bool {
    if std::env::var_os(HELPER_ENV).is_none() {
        return false;
    }
    let rest: Vec<String> = args
        .iter()
        .skip_while(|a| *a != "--bench")
        .skip(1)
        .cloned()
        .collect();
    helper(&rest[0], &rest[1..]);
    true
}

/// The real-time (SCHED_FIFO) priority helpers run at, 0 for none.
static REALTIME: AtomicU32 = AtomicU32::new(0);

/// Helpers started from now on run at this SCHED_FIFO priority (`chrt -f`), or normally.
pub fn set_realtime(priority: Option<u32>) {
    REALTIME.store(priority.unwrap_or(0), Ordering::Relaxed);
}

/// This benchmark re-executed in `netns` (pinned to `cpu` if given, at the priority of
/// [`set_realtime`]) in helper mode.
pub fn command(netns: &str, cpu: Option<&str>, args: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]);
    let rt = REALTIME.load(Ordering::Relaxed);
    if rt > 0 {
        c.args(["chrt", "-f", &rt.to_string()]);
    }
    if let Some(cpu) = cpu {
        c.args(["taskset", "-c", cpu]);
    }
    c.arg(exe).arg("--bench").args(args).env(HELPER_ENV, "1");
    c
}

/// Starts a server helper and waits until it listens.
pub fn spawn(netns: &str, cpu: Option<&str>, args: &[&str]) -> Killed {
    let mut child = command(netns, cpu, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ip netns exec runs");
    let mut line = [0u8; 6];
    child
        .stdout
        .as_mut()
        .expect("piped")
        .read_exact(&mut line)
        .expect("the helper says it is ready");
    Killed(child)
}

/// Runs a client helper to its end; the figures it prints (one or more, space-separated).
pub fn run_figures(netns: &str, cpu: Option<&str>, args: &[&str]) -> Vec<f64> {
    let out = command(netns, cpu, args)
        .output()
        .expect("ip netns exec runs");
    assert!(
        out.status.success(),
        "helper {args:?} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|f| f.parse().expect("a figure"))
        .collect()
}

/// Runs a client helper to its end; its figure.
pub fn run(netns: &str, cpu: Option<&str>, args: &[&str]) -> f64 {
    run_figures(netns, cpu, args)[0]
}

/// CPU time this thread has spent, in nanoseconds (in the kernel too: the softirq work a send
/// does in the sender's context is charged to it unless the kernel accounts IRQ time apart,
/// `CONFIG_IRQ_TIME_ACCOUNTING`).
fn thread_cpu_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("the thread's CPU clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// A helper process killed when dropped (also when a measurement panics).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The value at quantile `q` (0..=1) of `v`, nearest rank.
pub fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ready() {
    println!("ready");
    std::io::stdout().flush().expect("stdout");
}

/// Runs one helper mode (see the module's documentation).
pub fn helper(mode: &str, args: &[String]) {
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    match mode {
        "tcp-server" => {
            let l = TcpListener::bind("0.0.0.0:80").expect("port 80");
            ready();
            for mut s in l.incoming().flatten() {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        }
        "udp-server" => {
            let s = UdpSocket::bind("0.0.0.0:5353").expect("port 5353");
            let poll = args.first().is_some_and(|m| m == "poll");
            if poll {
                s.set_nonblocking(true).expect("non-blocking");
            } else {
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .expect("timeout");
            }
            ready();
            let mut count = 0u64;
            let mut buf = [0u8; 2048];
            let give_up = Instant::now() + Duration::from_secs(5);
            // The end: 300 ms without a datagram once they came, or none in 5 s.
            let mut last: Option<Instant> = None;
            loop {
                match s.recv(&mut buf) {
                    Ok(_) => {
                        count += 1;
                        last = Some(Instant::now());
                    }
                    Err(e) if poll && e.kind() == std::io::ErrorKind::WouldBlock => {
                        let over = match last {
                            Some(t) => t.elapsed() > Duration::from_millis(300),
                            None => Instant::now() > give_up,
                        };
                        if over {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    Err(_) if last.is_some() || Instant::now() > give_up => break,
                    Err(_) => {}
                }
            }
            println!("{count}");
        }
        "crr" => {
            let target: SocketAddr = format!("{}:80", args[0]).parse().expect("address");
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut n = 0u64;
            let mut failed = 0u64;
            while Instant::now() < end {
                let round = || -> std::io::Result<()> {
                    let mut s = TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
                    s.set_read_timeout(Some(Duration::from_millis(500)))?;
                    s.write_all(b"x")?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b)?;
                    // The server closes first (TIME_WAIT stays on its side).
                    let _ = s.read(&mut b);
                    Ok(())
                };
                match round() {
                    Ok(()) => n += 1,
                    Err(_) => failed += 1,
                }
            }
            if failed > 0 {
                eprintln!("crr: {failed} of {} connections failed", n + failed);
            }
            println!("{}", n as f64 / secs);
        }
        "udp" => {
            let target = format!("{}:5353", args[0]);
            let s = UdpSocket::bind("0.0.0.0:0").expect("a port");
            s.connect(&target).expect("connect");
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let payload = [7u8; 64];
            let mut sent = 0u64;
            let cpu = thread_cpu_ns();
            while Instant::now() < end {
                for _ in 0..64 {
                    if s.send(&payload).is_ok() {
                        sent += 1;
                    }
                }
            }
            println!("{sent} {}", thread_cpu_ns() - cpu);
        }
        "stream-server" => {
            let l = TcpListener::bind("0.0.0.0:5201").expect("port 5201");
            ready();
            for mut s in l.incoming().flatten() {
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                let _ = s.write_all(format!("{total}\n").as_bytes());
            }
        }
        "stream" => {
            let target: SocketAddr = format!("{}:5201", args[0]).parse().expect("address");
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .expect("the stream server answers");
            let buf = vec![0x5au8; 1 << 16];
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(secs);
            while Instant::now() < end {
                s.write_all(&buf).expect("the stream keeps flowing");
            }
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("the count");
            let elapsed = start.elapsed().as_secs_f64();
            let bytes: f64 = answer.trim().parse().expect("a count");
            println!("{}", bytes * 8.0 / elapsed);
        }
        "rr-server" => {
            let l = TcpListener::bind("0.0.0.0:5202").expect("port 5202");
            ready();
            for mut s in l.incoming().flatten() {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
            }
        }
        "rr" => {
            let target: SocketAddr = format!("{}:5202", args[0]).parse().expect("address");
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .expect("the rr server answers");
            s.set_nodelay(true).expect("nodelay");
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(secs);
            let mut n = 0u64;
            let mut b = [1u8; 1];
            while Instant::now() < end {
                for _ in 0..16 {
                    s.write_all(&b).expect("the connection stays up");
                    s.read_exact(&mut b).expect("the echo");
                    n += 1;
                }
            }
            println!("{}", n as f64 / start.elapsed().as_secs_f64());
        }
        "first-connect" => {
            let target: SocketAddr = format!("{}:80", args[0]).parse().expect("address");
            let give_up = Instant::now() + Duration::from_secs_f64(secs);
            while Instant::now() < give_up {
                if TcpStream::connect_timeout(&target, Duration::from_millis(20)).is_ok() {
                    std::process::exit(0);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            std::process::exit(1);
        }
        other => panic!("unknown helper {other}"),
    }
}
