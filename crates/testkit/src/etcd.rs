//! A throwaway etcd server on loopback for tests: its own data directory and free ports,
//! stopped (and its data removed) when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_tool;

/// A running `etcd` (Debian's etcd-server, 3.4).
pub struct EtcdServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<TlsFiles>,
    /// Run inside this network namespace, listening on `host` (else the root namespace's
    /// loopback).
    netns: Option<String>,
    host: String,
    child: Option<Child>,
}

/// PEM files of a throwaway CA, a server certificate for 127.0.0.1 and a client certificate.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and two certificates signed by it, with `openssl`.
fn make_certificates(dir: &std::path::Path) -> TlsFiles {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gingham-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .expect("write extension file");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN=gingham-test-{name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
    TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

impl EtcdServer {
    /// Starts a fresh, empty server. Panics (failing the test loudly) if `etcd` is missing or
    /// does not come up.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server that speaks only TLS and requires client certificates signed by its CA
    /// (see [`EtcdServer::tls`]). Needs `openssl` to make the certificates.
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let binary = require_tool("etcd");
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let tls = tls.then(|| make_certificates(dir.path()));
        let mut server = Self {
            binary,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            netns: None,
            host: "127.0.0.1".into(),
            child: None,
        };
        server.launch();
        server
    }

    /// Starts a server inside network namespace `netns` (by name, under /run/netns), listening
    /// on `host`, an address of that namespace: for clients running in test-made namespaces.
    pub fn start_in(netns: &str, host: &str) -> Self {
        let binary = require_tool("etcd");
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let mut server = Self {
            binary,
            dir,
            client_port: 2379,
            peer_port: 2380,
            tls: None,
            netns: Some(netns.to_owned()),
            host: host.to_owned(),
            child: None,
        };
        server.launch();
        server
    }

    /// The certificates of a TLS server.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` for a TLS server).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    /// Stops the server and starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Stops the server (it can be started again with [`EtcdServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its connections open but answers nothing until
    /// [`EtcdServer::thaw`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("the etcd server is running");
        let status = Command::new(require_tool("kill"))
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    fn launch(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new(require_tool("ip"));
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth=true");
        }
        let child = cmd
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = format!("{}:{}", self.host, self.client_port);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                panic!("etcd exited with {status} at start:\n{log}");
            }
            // A TLS server cannot be asked over plain HTTP; a listening port is enough there.
            let up = match &self.netns {
                Some(_) => self.healthy_in_netns(),
                None => TcpStream::connect(&addr).is_ok() && (self.tls.is_some() || self.healthy()),
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer on {addr} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server answers `etcdctl endpoint health` from inside its namespace.
    fn healthy_in_netns(&self) -> bool {
        let Some(ns) = &self.netns else { return false };
        Command::new(require_tool("ip"))
            .args(["netns", "exec", ns])
            .arg(require_tool("etcdctl"))
            .args(["--endpoints", &self.endpoint(), "endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether `/health` answers (a plain HTTP request, no client library needed).
    fn healthy(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /health HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.client_port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"") || body.contains("\"health\": \"true\"")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
