//! Starting the real `converge-ledger serve` binary on free loopback ports and stopping it the
//! way an operator or a crash would.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use converge_client::{Client, ClientConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_converge-ledger");

/// A running node.
pub struct Node {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

fn field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
}

impl Node {
    /// Starts a node on `dir` with extra flags, and waits until it prints `listening on`.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_at(dir, "127.0.0.1:0", extra)
    }

    /// Starts a node listening on `grpc` (to restart one where its clients expect it).
    pub fn start_at(dir: &Path, grpc: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", grpc, "--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("CONVERGE_LEDGER_LOG_LEVEL", "info")
            .env_remove("GRPC_PORT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start converge-ledger serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (http_tx, http_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving")
                    && let Some(http) = field(&line, "http")
                {
                    let _ = http_tx.send(http);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (addr_tx, addr_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = addr_tx.send(line);
            }
            for _ in lines {}
        });
        let line = addr_rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!(
                "the node did not print `listening on`; its log:\n{}",
                log.lock().unwrap().join("\n")
            )
        });
        let grpc = line
            .strip_prefix("listening on ")
            .expect("`listening on ADDR`")
            .parse()
            .expect("an address");
        let http = http_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the http address is logged")
            .parse()
            .expect("an address");
        Self { child: Some(child), grpc, http, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The node's resident memory, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.url()).await.expect("connect to the node")
    }

    pub async fn verifying_client(&self) -> Client {
        Client::connect_with(ClientConfig::new(self.url()).verifying())
            .await
            .expect("connect to the node")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_for(&mut child, Duration::from_secs(60))
    }

    /// Kills the process with SIGKILL.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// A GET on the HTTP port: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(self.http).expect("connect to the HTTP port");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

/// The resident memory of process `pid` in KiB, from `/proc` (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `serve` on `dir` with `extra` flags, expecting it to refuse to start: what it printed
/// on stderr. Panics if it starts serving instead.
pub fn refused_start(dir: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("GRPC_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start converge-ledger serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("its output");
            panic!(
                "serve {extra:?} did not refuse to start; it printed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "serve {extra:?} exited 0; it printed:\n{stderr}");
    assert!(out.stdout.is_empty(), "a refused node never says it listens: {stderr}");
    stderr
}

fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "the node did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
