//! The open-file budget: the process's descriptors shared out so that neither port can
//! starve the other.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit (as nginx's
//! `worker_rlimit_nofile` and Go's runtime do): the soft default of 1024 is a relic, and
//! the hard limit is what the operator or the container runtime actually allows. Then
//! `TCPIE_MAX_CONNECTIONS`, `TCPIE_ADMIN_MAX_CONNECTIONS` and a reserve for everything
//! else (the listeners, the runtime's own descriptors, the trace exporter, files read for
//! `/metrics`) must fit in it. If they do not, TCPie says so at start, naming the
//! variables and the limit, and holds the TCP port to what is left: at its cap, new
//! connections wait in the kernel's backlog instead of failing to be accepted, and the
//! admin port's share stays free for the probes.

use std::fmt;

use crate::config::Config;

/// Descriptors kept for everything but connections: stdio, the two listeners, the
/// runtime's epoll and wakers, the trace exporter's connection, files read for `/metrics`
/// and a margin.
pub const RESERVE: u64 = 64;

/// The process's open-file limit, after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit in force now: what the process may open.
    pub limit: u64,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
    /// The soft limit before it was raised, if it was.
    pub raised_from: Option<u64>,
}

/// The kernel's ceiling for an unlimited hard limit (`fs.nr_open`), 1048576 if unknown.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; the limit in force either way.
pub fn raise() -> std::io::Result<OpenFiles> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    let hard = current.maximum;
    let soft = current.current.unwrap_or(u64::MAX);
    let target = hard.unwrap_or_else(nr_open);
    if soft >= target {
        return Ok(OpenFiles {
            limit: soft,
            hard,
            raised_from: None,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: hard,
        },
    )?;
    Ok(OpenFiles {
        limit: target,
        hard,
        raised_from: Some(soft),
    })
}

/// How the descriptors are shared out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub open_files: OpenFiles,
    /// `TCPIE_MAX_CONNECTIONS` as configured.
    pub configured: usize,
    /// `TCPIE_ADMIN_MAX_CONNECTIONS`.
    pub admin: usize,
    /// The most connections the TCP port will hold.
    pub tcp: usize,
    /// Connections to the upstream (upstream mode: one a permit).
    pub upstream: u64,
}

impl Budget {
    pub fn new(config: &Config, open_files: OpenFiles) -> Budget {
        // In upstream mode each permit may hold a connection to the upstream.
        let upstream = config.upstream().map_or(0, |_| config.workers as u64);
        let others = config.admin_max_connections as u64 + RESERVE + upstream;
        let room = open_files.limit.saturating_sub(others).max(1);
        Budget {
            open_files,
            configured: config.max_connections,
            admin: config.admin_max_connections,
            tcp: (config.max_connections as u64).min(room) as usize,
            upstream,
        }
    }

    /// Whether everything configured fits in the limit.
    pub fn fits(&self) -> bool {
        self.tcp == self.configured
    }

    fn needed(&self) -> u64 {
        self.configured as u64 + self.admin as u64 + RESERVE + self.upstream
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hard = self
            .open_files
            .hard
            .map_or_else(|| "unlimited".to_string(), |h| h.to_string());
        if self.fits() {
            return write!(
                f,
                "open files: limit {} (hard limit {hard}), {} needed by TCPIE_MAX_CONNECTIONS, \
                 TCPIE_ADMIN_MAX_CONNECTIONS and {RESERVE} reserved",
                self.open_files.limit,
                self.needed()
            );
        }
        write!(
            f,
            "TCPIE_MAX_CONNECTIONS={} and TCPIE_ADMIN_MAX_CONNECTIONS={} with {RESERVE} \
             descriptors reserved{} need {} open files, but the limit is {} (RLIMIT_NOFILE, \
             hard limit {hard}): the TCP port will hold at most {} connections. Raise the \
             limit (ulimit -n, the container runtime's nofile) or lower TCPIE_MAX_CONNECTIONS.",
            self.configured,
            self.admin,
            if self.upstream > 0 {
                format!(
                    " and {} upstream connections (TCPIE_WORKERS)",
                    self.upstream
                )
            } else {
                String::new()
            },
            self.needed(),
            self.open_files.limit,
            self.tcp
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(limit: u64) -> OpenFiles {
        OpenFiles {
            limit,
            hard: Some(limit),
            raised_from: None,
        }
    }

    #[test]
    fn what_does_not_fit_is_taken_from_the_tcp_port_and_said() {
        let config = Config::default();
        let b = Budget::new(&config, files(256));
        assert_eq!(b.tcp, 256 - 32 - 64);
        assert!(!b.fits());
        let text = b.to_string();
        for part in [
            "TCPIE_MAX_CONNECTIONS=10000",
            "TCPIE_ADMIN_MAX_CONNECTIONS=32",
            "need 10096 open files",
            "the limit is 256",
            "at most 160 connections",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        let b = Budget::new(&config, files(1 << 20));
        assert!(b.fits() && b.tcp == 10_000, "{b}");
        // Even a limit below the reserve leaves the TCP port one connection.
        assert_eq!(Budget::new(&config, files(10)).tcp, 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let files = raise().unwrap();
        assert!(files.hard.is_none_or(|h| files.limit == h), "{files:?}");
        // Raising again changes nothing.
        assert_eq!(raise().unwrap().raised_from, None);
    }
}
