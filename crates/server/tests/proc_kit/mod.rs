//! The real `aether` binary as a child process: started on an ephemeral port with a clean
//! environment, stopped with SIGTERM (graceful) or SIGKILL (a crash). The child is killed when
//! its handle drops, so a failing test leaves no process behind.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `aether` with none of the caller's `AETHER_*` settings leaking in.
pub fn aether() -> Command {
    aether_gateway::install_tls();
    let mut c = Command::new(env!("CARGO_BIN_EXE_aether"));
    for var in [
        "AETHER_CONFIG",
        "AETHER_DATABASE_URL",
        "AETHER_DATA_DIR",
        "AETHER_REDIS_URL",
        "AETHER_REDIS_PREFIX",
        "AETHER_ADMIN_EMAIL",
        "AETHER_ADMIN_PASSWORD",
        "AETHER_MODE",
        "AETHER_JWT_SECRET",
        "AETHER_ENCRYPTION_KEY",
        "AETHER_LISTEN",
        "AETHER_LOG",
        "RUST_LOG",
        "AETHER_LOG_FORMAT",
    ] {
        c.env_remove(var);
    }
    c
}

/// A fresh directory under the system temp dir.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "aether-proc-{tag}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Server {
    pub child: Child,
    pub url: String,
    /// What it printed to stdout before its "listening" line (first-start banner).
    pub banner: Vec<String>,
    /// stderr lines, collected by a thread until the process exits.
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `aether --data-dir <dir> serve --listen 127.0.0.1:0 <args>` with `env` set, and
/// waits (up to 30 s) for its "listening" line.
pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = aether();
    cmd.args(["--data-dir"])
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut banner = Vec::new();
    let url = loop {
        assert!(
            Instant::now() < deadline,
            "server did not start: {banner:?}"
        );
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(u) = line.strip_prefix("aether listening on ") {
            break u.to_string();
        }
        banner.push(line);
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Server {
        child,
        url,
        banner,
        stderr: Some(stderr),
    }
}

impl Server {
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `signal` (`TERM`, `KILL`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait for a clean exit (exit code 0), return what it wrote to stderr.
    pub fn stop(mut self) -> Vec<String> {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(15));
        assert!(status.success(), "graceful shutdown exits 0, got {status}");
        self.stderr.take().unwrap().join().unwrap()
    }

    /// SIGKILL: the process dies at once, nothing of it runs any more.
    pub fn kill(mut self) -> Vec<String> {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10));
        self.stderr.take().unwrap().join().unwrap()
    }
}
