//! The built `tcpie` binary as a child process, for tests that need signals, exit codes
//! or process limits.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{sleep, Instant};

/// The value of `name=value` in a text log line.
pub fn log_field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=");
    let start = line
        .match_indices(&key)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || line.as_bytes()[i - 1] == b' ')
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        + key.len();
    line[start..].split_whitespace().next().unwrap_or_default()
}

pub struct Tcpie {
    pub child: Child,
    pub tcp: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpie"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("TCPIE_HOST", "127.0.0.1")
        .env("TCPIE_PORT", "0")
        .env("TCPIE_ADMIN_PORT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the binary (optionally under a wrapper such as `prlimit`) and waits for its
/// "listening" line to learn both ports.
pub fn spawn(wrapper: &[&str], env: &[(&str, &str)]) -> Tcpie {
    spawn_with(wrapper, env, |_| {})
}

/// [`spawn`], with a last change to the command (variables that are not text, say).
pub fn spawn_with(
    wrapper: &[&str],
    env: &[(&str, &str)],
    adjust: impl FnOnce(&mut Command),
) -> Tcpie {
    let mut cmd = if wrapper.is_empty() {
        command(env)
    } else {
        let inner = command(env);
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(inner.get_program());
        cmd.env_clear();
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd
    };
    adjust(&mut cmd);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if line.contains("listening") {
                let field = |name: &str| -> SocketAddr {
                    if line.starts_with('{') {
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        return v["fields"][name].as_str().unwrap().parse().unwrap();
                    }
                    log_field(&line, name).parse().unwrap()
                };
                let _ = tx.send((field("tcp"), field("admin")));
            }
        }
    });
    let (tcp, admin) = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("tcpie did not start: {}", log.lock().unwrap()));
    Tcpie {
        child,
        tcp,
        admin,
        log,
    }
}

impl Tcpie {
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "tcpie did not exit within {within:?}:\n{}",
                    self.log.lock().unwrap()
                );
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn admin(&self, path: &str) -> (u16, String) {
        super::admin_get(self.admin, path).await
    }

    pub async fn wait_admitted(&self, n: u64) {
        super::wait_admitted(self.admin, n).await
    }
}

impl Drop for Tcpie {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
