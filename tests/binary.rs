//! The built `tcpie` binary as a child process: signals, exit codes, configuration
//! errors, and running out of file descriptors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::process::{command, spawn};
use common::request;
use tokio::net::TcpStream;
use tokio::time::sleep;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn sigterm_answers_every_request_in_flight_and_exits_0() {
    let mut tcpie = spawn(
        &[],
        &[
            ("TCPIE_WORKERS", "1"),
            ("TCPIE_QUEUE_SIZE", "3"),
            ("TCPIE_BURST", "0"),
            ("TCPIE_SIMULATED_WORK_MS", "300"),
        ],
    );
    let addr = tcpie.tcp;
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { request(addr, GET).await }))
        .collect();
    tcpie.wait_admitted(4).await;
    tcpie.signal("TERM");
    let status = tcpie.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", tcpie.log.lock().unwrap());
    for c in clients {
        let reply = c.await.unwrap().expect("a complete answer");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body_text(), "Hello world !\n");
    }
    let log = tcpie.log.lock().unwrap().clone();
    for phase in [
        "stop signal received",
        "listener closed, draining",
        "requests drained, workers stopped",
        "shutdown: complete",
    ] {
        assert!(log.contains(phase), "missing {phase:?} in\n{log}");
    }
    // The final counters name every outcome, client_rate_limited and later ones included.
    let summary = log
        .lines()
        .find(|l| l.contains("shutdown: complete"))
        .unwrap();
    for outcome in tcpie::internal::Outcome::ALL {
        assert!(
            summary.contains(&format!(" {}=", outcome.as_str())),
            "{outcome:?} missing from {summary}"
        );
    }
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut tcpie = spawn(
        &[],
        &[("TCPIE_BURST", "0"), ("TCPIE_SIMULATED_WORK_MS", "20000")],
    );
    let addr = tcpie.tcp;
    let client = tokio::spawn(async move { request(addr, GET).await });
    tcpie.wait_admitted(1).await;
    tcpie.signal("INT");
    sleep(Duration::from_millis(200)).await;
    assert!(
        tcpie.child.try_wait().unwrap().is_none(),
        "the first signal only starts the drain"
    );
    tcpie.signal("TERM");
    let status = tcpie.wait_exit(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(143));
    drop(client);
}

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = command(env).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The configuration error example of the README, run as it is written (the debug binary
/// behaves as the release one): the same lines, in the same order, whatever order the
/// environment holds the variables in.
#[test]
fn the_readme_configuration_error_example_is_what_the_binary_prints() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```")
        .find(|b| b.trim_start().starts_with("$ TCPIE_WORKRS="))
        .expect("the example in README.md");
    let mut lines = block.trim().lines();
    let command_line = lines.next().unwrap().trim_start_matches("$ ");
    let (assignments, program) = command_line.rsplit_once(' ').unwrap();
    assert_eq!(program, "target/release/tcpie");
    let expected: Vec<&str> = lines.collect();
    let mut env: Vec<(&str, &str)> = assignments
        .split(' ')
        .map(|a| a.split_once('=').unwrap())
        .collect();
    for _ in 0..2 {
        let (code, stderr) = run_with(&env);
        assert_eq!(code, Some(64));
        assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{env:?}");
        env.reverse();
    }
}

#[test]
fn a_bad_value_refuses_to_start_naming_variable_and_value() {
    let (code, stderr) = run_with(&[("TCPIE_WORKERS", "many")]);
    assert_eq!(code, Some(64));
    assert!(
        stderr
            .contains("TCPIE_WORKERS=\"many\" is invalid: expected a whole number from 1 to 65536"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );

    let (code, stderr) = run_with(&[("TCPIE_READY_QUEUE_THRESHOLD", "2")]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("TCPIE_READY_QUEUE_THRESHOLD=\"2\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_utf8_never_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    // In an unrelated variable (name or value): ignored, the server starts and serves.
    let mut cmd = command(&[("TCPIE_BURST", "0")]);
    cmd.env("X", OsStr::from_bytes(b"\xff"))
        .env(OsStr::from_bytes(b"Y\xfe"), "1")
        .arg("healthcheck");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The healthcheck reads the same configuration: it fails only to connect.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unhealthy"), "{stderr}");
    let tcpie = common::process::spawn_with(&[], &[("TCPIE_BURST", "0")], |cmd| {
        cmd.env("X", OsStr::from_bytes(b"\xff"));
    });
    assert_eq!(request(tcpie.tcp, GET).await.unwrap().status, 200);

    // In one of ours: a configuration error naming it, with every other problem.
    for name in ["TCPIE_WORKERS", "OTEL_SERVICE_NAME"] {
        let mut cmd = command(&[("TCPIE_BURST", "-3")]);
        cmd.env(name, OsStr::from_bytes(b"2\xff"));
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains(&format!("{name}=\"2\u{fffd}\" is invalid")),
            "{stderr}"
        );
        assert!(stderr.contains("TCPIE_BURST=\"-3\""), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_unknown_variable_refuses_to_start_naming_the_closest() {
    let (code, stderr) = run_with(&[("TCPIE_RATE_PER_SECONDS", "5")]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains(
            "unknown variable TCPIE_RATE_PER_SECONDS: did you mean TCPIE_RATE_PER_SECOND?"
        ),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = run_with(&[("TCPIE_PORT", &port)]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_0_when_healthy_and_1_otherwise() {
    let mut tcpie = spawn(&[], &[("TCPIE_BURST", "0")]);
    let admin_port = tcpie.admin.port().to_string();
    let healthcheck = |args: &[&str], port: &str| {
        let out = command(&[("TCPIE_ADMIN_PORT", port)])
            .arg("healthcheck")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = healthcheck(&[], &admin_port);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("/livez"), "{stdout}");
    assert_eq!(healthcheck(&["/readyz"], &admin_port).0, Some(0));
    assert_eq!(healthcheck(&["/nowhere"], &admin_port).0, Some(1));
    tcpie.signal("TERM");
    assert_eq!(
        tcpie.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    // Nothing listens any more.
    assert_eq!(healthcheck(&[], &admin_port).0, Some(1));
    assert_eq!(run_args(&["--version"]).0, Some(0));
    assert_eq!(run_args(&["serve", "now"]).0, Some(64));
}

fn run_args(args: &[&str]) -> (Option<i32>, String) {
    let out = command(&[]).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
