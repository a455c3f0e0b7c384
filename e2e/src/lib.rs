//! Test harness: real processes on loopback for integration and end-to-end tests.
//!
//! Every test in this workspace that needs Envoy, redis-server or one of the project's own
//! binaries starts it through this crate:
//!
//! - [`tool`] finds an external program (on `PATH`, which `scripts/bootstrap.sh` prepares through
//!   `.tools/env`, or in the checkout's `.tools/bin`) and **panics naming what is missing** —
//!   a missing dependency fails a test, it never skips it.
//! - [`Process`] is a spawned child whose stdout and stderr go to a log file; it is killed (with
//!   its process group) when dropped, also when the test panics, and [`Process::logs`] returns
//!   what it printed so failures can show it.
//! - [`RedisServer`], [`RedisCluster`] and [`Envoy`] start the real servers on free loopback
//!   ports and wait until they answer, polling instead of sleeping a fixed time.
//! - [`workspace_binary`] locates `authz` / `modelserver` as built by cargo in this workspace,
//!   [`workspace_module`] the embedded mode's `libauthz_module.so`; [`both_modes!`] runs one
//!   test body against a stack of each mode.
//! - [`otlp::OtlpReceiver`] stands in for a trace collector: it keeps the spans our services
//!   export over OTLP/HTTP JSON so tests can assert on them.
//! - [`raw_grpc`] writes OIP gRPC messages by hand and sends them over raw HTTP/2, trailers
//!   included, for the attack tests.
//! - [`stack::Stack`] runs the whole request path (redis-server, authz, modelserver, Envoy) for
//!   the end-to-end tests.
//!
//! What it does not guarantee: [`free_port`] asks the kernel for a free port and releases it, so
//! another process can in principle take the port before the server binds it. Servers of our own
//! should be given an already-bound listener in-process instead; this is for external programs.

pub mod otlp;
pub mod raw_grpc;
pub mod stack;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to become ready before the test fails. Envoy's first start on a
/// loaded 2-core machine takes a few seconds; a minute leaves room without hiding a hang.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (the workspace that contains this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e crate lives one level below the repository root")
        .to_path_buf()
}

/// Finds an external program by name: `PATH` first, then `<repo>/.tools/bin`.
///
/// # Panics
/// When the program is nowhere to be found, with a message naming it and how to install it.
pub fn tool(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    let local = repo_root().join(".tools/bin").join(name);
    if is_executable(&local) {
        return local;
    }
    panic!(
        "required program `{name}` is missing: not on PATH and not in {}. \
         Run `scripts/bootstrap.sh` (or `make bootstrap`) and `source .tools/env`.",
        local.display()
    );
}

/// The ONNX Runtime shared library the tests load: `ORT_DYLIB_PATH`, else the bootstrapped copy.
///
/// # Panics
/// When neither exists, naming both places.
pub fn ort_dylib() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "ORT_DYLIB_PATH points at {}, which does not exist; run scripts/bootstrap.sh",
            p.display()
        );
        return p;
    }
    let local = repo_root().join(".tools/lib/libonnxruntime.so");
    assert!(
        local.is_file(),
        "libonnxruntime is missing: ORT_DYLIB_PATH is unset and {} does not exist; \
         run scripts/bootstrap.sh",
        local.display()
    );
    local
}

/// Path of one of this workspace's binaries (`authz`, `modelserver`) as built by cargo.
///
/// # Panics
/// When it has not been built, saying which cargo command builds it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    assert!(
        is_executable(&path),
        "binary `{name}` not found at {}; build it with `cargo build -p {name}` \
         (`make test` does this first)",
        path.display()
    );
    path
}

/// Path of `libauthz_module.so`, the embedded mode's Envoy dynamic module, as built by cargo.
///
/// # Panics
/// When it has not been built, saying which cargo command builds it.
pub fn workspace_module() -> PathBuf {
    let path = workspace_binary("authz").with_file_name("libauthz_module.so");
    assert!(
        path.is_file(),
        "libauthz_module.so not found at {}; build it with `cargo build -p envoy-module` \
         (`make test` does this first)",
        path.display()
    );
    path
}

/// One test body, both modes: each `fn name(s: &Stack) { ... }` becomes a module `name` with two
/// tests, `service` (authz behind ext_authz) and `embedded` (the authz module inside Envoy), each
/// running the body on its shared stack. Both must pass the same assertions: the decisions a
/// client sees are the same in both modes, except where a body asks [`stack::Stack::embedded`].
///
/// ```ignore
/// static SERVICE: SharedStack = SharedStack::new(|| Stack::builder().redis(false));
/// static EMBEDDED: SharedStack =
///     SharedStack::new(|| Stack::builder().redis(false).embedded(e2e::workspace_module()));
/// e2e::both_modes! {
///     service: SERVICE, embedded: EMBEDDED;
///     /// Docs stay on the module.
///     fn health_is_public(s: &Stack) { assert_eq!(s.request("GET", "/v2/health/ready", &[], None).status, 200); }
/// }
/// ```
#[macro_export]
macro_rules! both_modes {
    (
        service: $service:path, embedded: $embedded:path;
        $( $(#[$meta:meta])* fn $name:ident($s:ident: &Stack) $body:block )*
    ) => {
        $(
            $(#[$meta])*
            mod $name {
                use super::*;

                fn body($s: &$crate::stack::Stack) $body

                #[test]
                fn service() {
                    body(&$service.lock());
                }

                #[test]
                fn embedded() {
                    body(&$embedded.lock());
                }
            }
        )*
    };
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (see the crate docs for the caveat).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the kernel hands out an ephemeral loopback port")
}

/// A spawned child process with its output captured in a log file; killed on drop.
pub struct Process {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
    command: Command,
    // Keep the log directory and any data/config directory of the process alive while it runs.
    dirs: Vec<tempfile::TempDir>,
}

impl Process {
    /// Spawns `command` in its own process group, output to a temporary log file.
    ///
    /// # Panics
    /// When the program cannot be started, naming it.
    pub fn spawn(name: &str, command: Command) -> Process {
        let dir = tempfile::Builder::new()
            .prefix(&format!("e2e-{name}-"))
            .tempdir()
            .expect("a temporary directory for the process log");
        let log_path = dir.path().join(format!("{name}.log"));
        let mut p = Process {
            name: name.to_string(),
            child: None,
            log_path,
            command,
            dirs: vec![dir],
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("the process log file can be created");
        let err = log.try_clone().expect("the log file handle can be cloned");
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            // A process group of its own, so drop can kill whatever it forked.
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only calls signal(2),
        // which is async-signal-safe. A test run launched in the background (`make test &`,
        // nohup, some CI runners) starts with SIGINT and SIGQUIT ignored, and exec keeps an
        // ignored disposition: a shell script under test could then not trap Ctrl-C. The
        // processes a test signals start as they would from a terminal.
        unsafe {
            self.command.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
                    if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = self.command.spawn().unwrap_or_else(|e| {
            panic!(
                "could not start `{}` ({:?}): {e}",
                self.name,
                self.command.get_program()
            )
        });
        self.child = Some(child);
    }

    /// The operating system's id of the running child.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the process printed so far (stdout and stderr interleaved).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child's process group.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-(pid as i32), signal);
            }
        }
    }

    /// Kills the process (SIGKILL to its group) and waits for it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process and starts it again with the same command line and log file.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// Panics unless the process is still running, showing its log.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "`{}` exited unexpectedly; its log:\n{}",
                self.name,
                self.logs()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of `{}` -----\n{}", self.name, self.logs());
        }
    }
}

/// Polls `probe` until it returns true or `timeout` passes; panics with `what` and `proc`'s log.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut proc: Option<&mut Process>,
    mut probe: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(10);
    loop {
        if probe() {
            return;
        }
        if let Some(p) = proc.as_deref_mut()
            && !p.is_running()
        {
            panic!(
                "{what}: the process exited before it was ready; log:\n{}",
                p.logs()
            );
        }
        if Instant::now() >= deadline {
            let logs = proc.map(|p| p.logs()).unwrap_or_default();
            panic!("{what}: not ready after {timeout:?}; log:\n{logs}");
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// A minimal HTTP/1.1 GET on loopback (no client library needed); returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {buf:?}")))?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((buf.as_str(), ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Decodes an HTTP/1.1 chunked body (sizes in hex, each chunk followed by CRLF).
pub(crate) fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    out
}

/// Waits until `GET http://addr{path}` answers 200.
pub fn wait_for_http(addr: SocketAddr, path: &str, timeout: Duration, proc: Option<&mut Process>) {
    wait_until(&format!("GET http://{addr}{path}"), timeout, proc, || {
        matches!(http_get(addr, path), Ok((200, _)))
    });
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A real `redis-server` on a free loopback port, without persistence.
pub struct RedisServer {
    port: u16,
    process: Process,
}

impl RedisServer {
    /// Starts redis-server and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts redis-server with extra `--flag value` arguments (e.g. cluster mode).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("e2e-redis-data-")
            .tempdir()
            .expect("a temporary directory for redis data");
        let mut cmd = Command::new(tool("redis-server"));
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
        let mut process = Process::spawn("redis-server", cmd);
        process.dirs.push(dir);
        let mut server = RedisServer { port, process };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        wait_until(
            "redis-server PING",
            READY_TIMEOUT,
            Some(&mut self.process),
            || redis_ping(port),
        );
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills redis-server (SIGKILL); the port stays reserved for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port (empty, as after a crash without persistence).
    pub fn restart(&mut self) {
        self.process.restart();
        self.wait_ready();
    }

    /// The underlying process (logs, pid).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Sends a raw RESP `PING`; true on `+PONG`.
pub(crate) fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A local Redis Cluster: `masters` redis-server processes joined by `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3) and waits until the cluster state is ok.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new(tool("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli can be started");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        for n in &cluster.nodes {
            let port = n.port();
            wait_until("redis cluster_state:ok", READY_TIMEOUT, None, || {
                Command::new(tool("redis-cli"))
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
        }
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// The nodes, e.g. to stop one.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

/// A real Envoy started from a YAML config string, with its admin interface on a free port.
pub struct Envoy {
    admin_port: u16,
    process: Process,
    config_path: PathBuf,
}

impl Envoy {
    /// Writes `config_yaml` to a file and starts envoy on it; `admin_port` must be the port the
    /// config's `admin` section listens on. Waits until `/ready` on the admin port says LIVE.
    pub fn start(config_yaml: &str, admin_port: u16) -> Envoy {
        let dir = tempfile::Builder::new()
            .prefix("e2e-envoy-")
            .tempdir()
            .expect("a temporary directory for the envoy config");
        let config_path = dir.path().join("envoy.yaml");
        fs::write(&config_path, config_yaml).expect("the envoy config can be written");
        let mut cmd = Command::new(tool("envoy"));
        cmd.arg("-c")
            .arg(&config_path)
            // Many envoys may run at once in parallel tests: no shared-memory clash.
            .arg("--use-dynamic-base-id")
            .args(["--log-level", "warn", "--concurrency", "1"])
            .args(["--drain-time-s", "0"]);
        let mut process = Process::spawn("envoy", cmd);
        process.dirs.push(dir);
        let mut envoy = Envoy {
            admin_port,
            process,
            config_path,
        };
        let addr = loopback(admin_port);
        wait_for_http(addr, "/ready", READY_TIMEOUT, Some(&mut envoy.process));
        envoy
    }

    /// The admin address (stats, ready).
    pub fn admin(&self) -> SocketAddr {
        loopback(self.admin_port)
    }

    /// The config file envoy runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The underlying process (logs, pid).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// One counter or gauge from `/stats?format=json&filter=^NAME$`; `None` when absent.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) =
            http_get(self.admin(), &format!("/stats?format=json&filter=^{name}$")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["stats"].as_array()?.iter().find(|s| s["name"] == name)?["value"].as_u64()
    }
}
