//! The whole request path on loopback: redis-server, authz, modelserver and Envoy as real
//! processes, wired together the way `make up` wires them, on free ports.
//!
//! [`Stack::start`] (or [`Stack::builder`]) does, in order:
//!
//! 1. `authz dev-init --out DIR --template config/authz.toml` into a temporary directory (a fresh
//!    dev issuer key, its JWKS and the demo config), then adjusts that config: the chosen listen
//!    ports, the Redis URL (`[rate_limit] redis_url`, only with [`StackBuilder::redis`]), the audit
//!    directory (`[audit] path`, only with [`StackBuilder::audit`], or whenever the demo config
//!    has an `[audit]` section), and any [`StackBuilder::authz_setting`];
//! 2. starts redis-server, authz, `modelserver serve` on the committed `models/` (with
//!    [`StackBuilder::modelserver_setting`]s as its `--config`; a second one, the replica, with
//!    [`StackBuilder::modelserver_replica`]), and Envoy on `envoy/render.py --target local`
//!    rendered with the same ports (the replica as a second host of the model server clusters) —
//!    all at once;
//! 3. waits until each is ready: Redis answers PING, authz `/readyz` and modelserver
//!    `/v2/health/ready` answer 200, Envoy's `/ready` answers 200 and its active health checks
//!    report the `authz`, `modelserver_http` and `modelserver_grpc` clusters healthy.
//!
//! Everything is killed when the `Stack` is dropped. Each child also gets `PR_SET_PDEATHSIG`, so
//! it dies with the thread that started it even if the test binary is killed: stop/start
//! processes of a stack from the thread that owns it. [`SharedStack`] is one stack for all the
//! tests of a file: started on first use from a thread that lives as long as the test binary,
//! handed to one test at a time, and dropped (processes killed, files removed) when the test
//! binary exits.
//!
//! Binaries: `authz` and `modelserver` from the cargo target directory
//! ([`crate::workspace_binary`]);
//! `E2E_AUTHZ_BIN` / `E2E_MODELSERVER_BIN` override them (handy for testing a branch build).
//!
//! What it does not guarantee: ports come from [`free_port`], so another process may take one
//! between the probe and the bind (the start then fails naming the process and its log).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use crate::loopback;
use crate::{
    Process, READY_TIMEOUT, free_port, http_get, repo_root, tool, wait_for_http, wait_until,
};

/// The clusters of the local Envoy config that must pass active health checks before the stack
/// counts as ready (names from `envoy/render.py`).
pub const ENVOY_CLUSTERS: [&str; 3] = ["authz", "modelserver_http", "modelserver_grpc"];

/// Lines of each process log shown by [`Stack::diagnostics`].
const LOG_TAIL_LINES: usize = 60;

/// The loopback ports one stack listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Envoy ingress (HTTP/1.1 and h2c).
    pub envoy: u16,
    /// Envoy admin (`/ready`, `/stats`, `/clusters`).
    pub envoy_admin: u16,
    /// authz gRPC (ext_authz, grpc.health.v1).
    pub authz_grpc: u16,
    /// authz admin HTTP (`/healthz`, `/readyz`, `/metrics`).
    pub authz_admin: u16,
    /// modelserver OIP REST.
    pub modelserver_http: u16,
    /// modelserver OIP gRPC.
    pub modelserver_grpc: u16,
    /// modelserver Prometheus metrics.
    pub modelserver_metrics: u16,
    /// redis-server, when the stack has one.
    pub redis: Option<u16>,
}

impl Ports {
    fn pick(redis: bool) -> Ports {
        // The kernel may hand out a just-released port again: draw until all eight differ.
        let mut taken = Vec::new();
        let mut next = || loop {
            let p = free_port();
            if !taken.contains(&p) {
                taken.push(p);
                return p;
            }
        };
        Ports {
            envoy: next(),
            envoy_admin: next(),
            authz_grpc: next(),
            authz_admin: next(),
            modelserver_http: next(),
            modelserver_grpc: next(),
            modelserver_metrics: next(),
            redis: if redis { Some(next()) } else { None },
        }
    }
}

/// How to start a [`Stack`]; see the module docs for what each option changes.
#[derive(Debug, Clone)]
pub struct StackBuilder {
    redis: bool,
    audit: bool,
    settings: Vec<(String, toml::Value)>,
    otlp: Option<String>,
    modelserver_settings: Vec<(String, toml::Value)>,
    replica: bool,
    embedded: Option<PathBuf>,
    authz_unix_socket: bool,
}

impl StackBuilder {
    /// Whether to start redis-server and point authz's rate limiter at it (`[rate_limit]
    /// redis_url`). Without it authz uses its in-process store (the embedded default), and any
    /// Redis URL in the demo config is removed.
    pub fn redis(mut self, on: bool) -> Self {
        self.redis = on;
        self
    }

    /// Whether to insert an `[audit]` section when the demo config has none. The audit always
    /// goes to the stack's temporary directory ([`Stack::audit_path`]) when the config has one.
    pub fn audit(mut self, on: bool) -> Self {
        self.audit = on;
        self
    }

    /// Sets one value of the generated authz config by dotted path (tables are created as
    /// needed), e.g. `("models.benchmark-echo.rate_limit.on_store_error", "allow".into())`.
    /// Model names may contain `-`; a path segment is split only at `.`.
    pub fn authz_setting(mut self, dotted_path: &str, value: impl Into<toml::Value>) -> Self {
        self.settings.push((dotted_path.to_string(), value.into()));
        self
    }

    /// Sets one value of a model server config (`serve --config`) by dotted path, e.g.
    /// `("shutdown.readiness_grace_ms", 30_000.into())`; without any the server runs on defaults.
    pub fn modelserver_setting(mut self, dotted_path: &str, value: impl Into<toml::Value>) -> Self {
        self.modelserver_settings
            .push((dotted_path.to_string(), value.into()));
        self
    }

    /// Whether to start a second model server (the replica, same repository and config) on its
    /// own ports, behind the same Envoy clusters as the first, as a scaled-out deployment runs.
    pub fn modelserver_replica(mut self, on: bool) -> Self {
        self.replica = on;
        self
    }

    /// Whether Envoy calls authz on a Unix domain socket (`[server] grpc_unix_socket` in the
    /// stack's directory, `--authz-addr unix:PATH` for Envoy) instead of its TCP port, as a
    /// gateway with authz on the same host can. authz keeps its TCP listener either way.
    pub fn authz_unix_socket(mut self, on: bool) -> Self {
        self.authz_unix_socket = on;
        self
    }

    /// Turns tracing on: Envoy renders with an OpenTelemetry tracer (its OTLP/gRPC export goes to
    /// a loopback port nobody listens on; its spans are not collected), and authz and
    /// modelserver export their spans as OTLP/HTTP JSON to `endpoint` (the base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), every 50 ms.
    pub fn otlp(mut self, endpoint: impl Into<String>) -> Self {
        self.otlp = Some(endpoint.into());
        self
    }

    /// Runs the decision inside Envoy (the embedded mode, docs/embedded.md): no authz process;
    /// Envoy renders with `envoy-module/render_embedded.py` and loads `module` (the built
    /// `libauthz_module.so`) with the stack's authz config.
    pub fn embedded(mut self, module: impl Into<PathBuf>) -> Self {
        self.embedded = Some(module.into());
        self
    }

    /// Starts the stack on the calling thread and waits until every part is ready.
    ///
    /// # Panics
    /// When a program is missing, a process exits early or is not ready within
    /// [`READY_TIMEOUT`], with the logs of every process started so far.
    pub fn start(self) -> Stack {
        Stack::launch(self)
    }

    /// Starts the stack from a thread that stays alive until the test binary exits, so the
    /// children (which die with the thread that started them) outlive the calling test. Meant
    /// for a stack shared by the tests of one file; [`SharedStack`] does this for you.
    ///
    /// # Panics
    /// As [`StackBuilder::start`] (the panic is re-raised on the calling thread).
    pub fn start_shared(self) -> Stack {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("e2e-stack-owner".into())
            .spawn(move || {
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.start()));
                let failed = result.is_err();
                let _ = tx.send(result);
                if failed {
                    return;
                }
                // Parked forever: this thread's exit would kill the stack's processes.
                loop {
                    std::thread::park();
                }
            })
            .expect("a thread to own the shared stack can be spawned");
        match rx.recv() {
            Ok(Ok(stack)) => stack,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the stack owner thread died without an answer"),
        }
    }
}

/// One [`Stack`] for the tests of a file, in a `static`:
///
/// ```text
/// static STACK: SharedStack = SharedStack::new(|| Stack::builder().redis(false));
/// #[test]
/// fn something() {
///     let stack = STACK.lock(); // started on first use; tests holding it run one at a time
///     stack.infer(..);
/// }
/// ```
///
/// Tests that hold the lock run one after another, so they may compare counters before and
/// after their requests. The stack is dropped when the test binary exits (an `atexit` hook).
pub struct SharedStack {
    // The stack once started; `None` before the first `lock` and after exit.
    stack: Mutex<Option<Stack>>,
    // How to start it.
    builder: fn() -> StackBuilder,
}

/// Shared stacks started in this process, dropped by [`drop_shared_stacks`] at exit.
static SHARED_STACKS: Mutex<Vec<&'static SharedStack>> = Mutex::new(Vec::new());

extern "C" fn drop_shared_stacks() {
    let stacks = std::mem::take(&mut *SHARED_STACKS.lock().unwrap_or_else(|p| p.into_inner()));
    for shared in stacks {
        let stack = shared
            .stack
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(stack);
    }
}

impl SharedStack {
    /// A shared stack that `builder` describes; nothing starts until the first [`lock`](Self::lock).
    pub const fn new(builder: fn() -> StackBuilder) -> SharedStack {
        SharedStack {
            stack: Mutex::new(None),
            builder,
        }
    }

    /// Waits for the other tests of the file to finish with the stack, starts it if this is the
    /// first use, and hands it over until the guard is dropped. A test that panicked while
    /// holding it does not poison it for the others.
    ///
    /// # Panics
    /// When the stack cannot start (see [`StackBuilder::start`]); the next `lock` tries again.
    pub fn lock(&'static self) -> SharedStackGuard {
        let mut guard = self.stack.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some((self.builder)().start_shared());
            let mut registry = SHARED_STACKS.lock().unwrap_or_else(|p| p.into_inner());
            if registry.is_empty() {
                // SAFETY: registers a plain `extern "C" fn` with no arguments, as atexit(3) wants.
                unsafe {
                    libc::atexit(drop_shared_stacks);
                }
            }
            registry.push(self);
        }
        SharedStackGuard(guard)
    }
}

/// A [`SharedStack`] held by one test; dereferences to the [`Stack`].
pub struct SharedStackGuard(MutexGuard<'static, Option<Stack>>);

impl std::ops::Deref for SharedStackGuard {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        self.0
            .as_ref()
            .expect("a SharedStackGuard exists only for a started stack")
    }
}

/// redis-server, authz, modelserver and Envoy, running and wired together; see the module docs.
pub struct Stack {
    ports: Ports,
    // Processes first: fields drop in order, so they are killed before their files are removed.
    envoy: Option<Process>,
    authz: Option<Process>,
    modelserver: Option<Process>,
    replica: Option<Process>,
    redis: Option<Process>,
    authz_bin: PathBuf,
    modelserver_bin: PathBuf,
    /// The replica's REST, gRPC and metrics ports, with [`StackBuilder::modelserver_replica`].
    replica_ports: Option<[u16; 3]>,
    /// The model server config, with [`StackBuilder::modelserver_setting`].
    modelserver_config: Option<PathBuf>,
    config_path: PathBuf,
    key_path: PathBuf,
    audit_dir: Option<PathBuf>,
    /// OTLP/HTTP base URL the services export spans to, when tracing is on.
    otlp: Option<String>,
    /// The folder Envoy loads `libauthz_module.so` from, in the embedded mode.
    module_dir: Option<PathBuf>,
    /// The Unix socket Envoy calls authz on, with [`StackBuilder::authz_unix_socket`].
    authz_unix_socket: Option<PathBuf>,
    // Holds the dev key, the generated configs and the audit files while the stack runs.
    dir: tempfile::TempDir,
}

impl Stack {
    /// The full stack as `make up` runs it: with redis-server and the audit log.
    pub fn start() -> Stack {
        Stack::builder().start()
    }

    /// A builder; defaults: Redis on, audit on.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            redis: true,
            audit: true,
            settings: Vec::new(),
            otlp: None,
            modelserver_settings: Vec::new(),
            replica: false,
            embedded: None,
            authz_unix_socket: false,
        }
    }

    fn launch(b: StackBuilder) -> Stack {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("e2e-stack-")
            .tempdir()
            .expect("a temporary directory for the stack");
        let authz_bin = binary("authz", "E2E_AUTHZ_BIN");
        let modelserver_bin = binary("modelserver", "E2E_MODELSERVER_BIN");
        let ports = Ports::pick(b.redis);

        let out = Command::new(&authz_bin)
            .arg("dev-init")
            .arg("--out")
            .arg(dir.path())
            .arg("--template")
            .arg(repo_root().join("config/authz.toml"))
            .output()
            .expect("authz dev-init can be started");
        assert!(
            out.status.success(),
            "authz dev-init failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let config_path = dir.path().join("authz.toml");
        let key_path = dir.path().join("issuer-key.pem");
        let audit_dir = configure_authz(&config_path, dir.path(), &ports, &b);
        let modelserver_config = (!b.modelserver_settings.is_empty()).then(|| {
            let mut doc = toml::Table::new();
            for (path, value) in &b.modelserver_settings {
                set(&mut doc, path, value.clone());
            }
            let path = dir.path().join("modelserver.toml");
            fs::write(&path, doc.to_string()).expect("the model server config can be written");
            path
        });

        let mut stack = Stack {
            ports,
            envoy: None,
            authz: None,
            modelserver: None,
            replica: None,
            redis: None,
            authz_bin,
            modelserver_bin,
            replica_ports: b.replica.then(|| [free_port(), free_port(), free_port()]),
            modelserver_config,
            config_path,
            key_path,
            audit_dir,
            otlp: b.otlp.clone(),
            module_dir: None,
            authz_unix_socket: b.authz_unix_socket.then(|| dir.path().join("authz.sock")),
            dir,
        };
        if let Some(module) = &b.embedded {
            let module_dir = stack.dir.path().join("modules");
            fs::create_dir_all(&module_dir).expect("the module directory can be created");
            fs::copy(module, module_dir.join("libauthz_module.so"))
                .unwrap_or_else(|e| panic!("copying {}: {e}", module.display()));
            stack.module_dir = Some(module_dir);
        }
        // Everything starts at once; the waits below then overlap their start-up times.
        if stack.ports.redis.is_some() {
            stack.redis = Some(stack.spawn_redis());
        }
        if stack.module_dir.is_none() {
            stack.authz = Some(stack.spawn_authz());
        }
        stack.modelserver = Some(stack.spawn_modelserver());
        if let Some(ports) = stack.replica_ports {
            stack.replica = Some(stack.spawn_modelserver_on("modelserver-replica", ports));
        }
        stack.envoy = Some(stack.spawn_envoy());

        if stack.redis.is_some() {
            stack.wait_redis();
        }
        if stack.authz.is_some() {
            stack.wait_authz();
        }
        stack.wait_modelserver();
        if let Some([http, ..]) = stack.replica_ports {
            wait_for_http(
                loopback(http),
                "/v2/health/ready",
                READY_TIMEOUT,
                stack.replica.as_mut(),
            );
        }
        stack.wait_envoy();
        if stack.module_dir.is_some() {
            stack.wait_authz();
        }
        eprintln!(
            "e2e stack ready in {:.1}s: envoy 127.0.0.1:{} ({:?})",
            started.elapsed().as_secs_f64(),
            stack.ports.envoy,
            stack.ports
        );
        stack
    }

    // ---- processes -------------------------------------------------------------------------

    fn spawn_redis(&self) -> Process {
        let port = self.ports.redis.expect("only called with a redis port");
        let data = self.dir.path().join("redis");
        fs::create_dir_all(&data).expect("the redis data directory can be created");
        let mut cmd = Command::new(tool("redis-server"));
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&data);
        Process::spawn("redis-server", die_with_parent(cmd))
    }

    fn spawn_authz(&self) -> Process {
        let mut cmd = Command::new(&self.authz_bin);
        cmd.arg("serve").arg("--config").arg(&self.config_path);
        self.export_spans(&mut cmd);
        Process::spawn("authz", die_with_parent(cmd))
    }

    fn spawn_modelserver(&self) -> Process {
        let p = &self.ports;
        let ports = [
            p.modelserver_http,
            p.modelserver_grpc,
            p.modelserver_metrics,
        ];
        self.spawn_modelserver_on("modelserver", ports)
    }

    /// `modelserver serve` on REST, gRPC and metrics `ports`.
    fn spawn_modelserver_on(&self, name: &str, [http, grpc, metrics]: [u16; 3]) -> Process {
        let mut cmd = Command::new(&self.modelserver_bin);
        cmd.arg("serve")
            .arg("--model-repository")
            .arg(repo_root().join("models"))
            .args(["--address", "127.0.0.1"])
            .args(["--http-port", &http.to_string()])
            .args(["--grpc-port", &grpc.to_string()])
            .args(["--metrics-port", &metrics.to_string()])
            .env("ORT_DYLIB_PATH", crate::ort_dylib());
        if let Some(config) = &self.modelserver_config {
            cmd.arg("--config").arg(config);
        }
        self.export_spans(&mut cmd);
        Process::spawn(name, die_with_parent(cmd))
    }

    /// The `--modelserver-http` or `--modelserver-grpc` of `envoy/render.py`: the first model
    /// server's `port`, then the replica's (`index` 0 REST, 1 gRPC), comma-separated.
    fn modelserver_addrs(&self, port: u16, index: usize) -> String {
        std::iter::once(port)
            .chain(self.replica_ports.map(|r| r[index]))
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// With tracing on, the standard OpenTelemetry variables that make a service export spans.
    fn export_spans(&self, cmd: &mut Command) {
        if let Some(endpoint) = &self.otlp {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_BSP_SCHEDULE_DELAY", "50");
        }
    }

    fn spawn_envoy(&self) -> Process {
        let config = self.dir.path().join("envoy.yaml");
        let out = if self.module_dir.is_some() {
            self.render_embedded(&config)
        } else {
            self.render(&config)
        };
        assert!(
            out.status.success(),
            "rendering the Envoy config failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(tool("envoy"));
        if let Some(dir) = &self.module_dir {
            // Info for the loader, so its "ABI version ... matched" line is in the log.
            cmd.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir)
                .args(["--component-log-level", "dynamic_modules:info"]);
            // The module exports its spans from Envoy's process.
            self.export_spans(&mut cmd);
        }
        cmd.arg("-c")
            .arg(&config)
            .arg("--use-dynamic-base-id")
            .args([
                "--log-level",
                "warn",
                "--concurrency",
                "1",
                "--drain-time-s",
                "0",
            ])
            // The access log (stdout) is flushed quickly so tests can read it.
            .args(["--file-flush-interval-msec", "50"]);
        Process::spawn("envoy", die_with_parent(cmd))
    }

    /// With tracing on, both renderers' `--otlp-addr`: Envoy traces, and exports its own spans to
    /// a free port nobody listens on (they are not collected).
    fn envoy_otlp(&self) -> Vec<String> {
        self.otlp
            .iter()
            .flat_map(|_| {
                [
                    "--otlp-addr".to_owned(),
                    format!("127.0.0.1:{}", free_port()),
                ]
            })
            .collect()
    }

    /// The listener, admin and model server options both renderers take.
    fn render_ports(&self) -> [String; 8] {
        let p = &self.ports;
        [
            "--listen-port".to_owned(),
            p.envoy.to_string(),
            "--admin-port".to_owned(),
            p.envoy_admin.to_string(),
            "--modelserver-http".to_owned(),
            self.modelserver_addrs(p.modelserver_http, 0),
            "--modelserver-grpc".to_owned(),
            self.modelserver_addrs(p.modelserver_grpc, 1),
        ]
    }

    /// `envoy-module/render_embedded.py`: render.py's local config with the module in place of
    /// ext_authz.
    fn render_embedded(&self, config: &Path) -> std::process::Output {
        Command::new(tool("python3"))
            .arg(repo_root().join("envoy-module/render_embedded.py"))
            .arg("--authz-config")
            .arg(&self.config_path)
            .args(self.render_ports())
            .args(self.envoy_otlp())
            .arg("--out")
            .arg(config)
            .output()
            .expect("python3 envoy-module/render_embedded.py can be started")
    }

    /// `envoy/render.py --target local` with this stack's ports.
    fn render(&self, config: &Path) -> std::process::Output {
        let p = &self.ports;
        Command::new(tool("python3"))
            .arg(repo_root().join("envoy/render.py"))
            .args(["--target", "local"])
            .args([
                "--authz-addr",
                &match &self.authz_unix_socket {
                    Some(path) => format!("unix:{}", path.display()),
                    None => format!("127.0.0.1:{}", p.authz_grpc),
                },
            ])
            .args(self.render_ports())
            .args(self.envoy_otlp())
            .arg("--out")
            .arg(config)
            .output()
            .expect("python3 envoy/render.py can be started")
    }

    fn wait_redis(&mut self) {
        let port = self.ports.redis.expect("only called with a redis port");
        let proc = self.redis.as_mut();
        wait_until("redis-server PING", READY_TIMEOUT, proc, || {
            crate::redis_ping(port)
        });
    }

    /// authz's `/readyz`: served by `authz serve`, or in the embedded mode by the module inside
    /// Envoy (on the same `[server] admin_addr`).
    fn wait_authz(&mut self) {
        let addr = loopback(self.ports.authz_admin);
        let proc = match self.authz.as_mut() {
            Some(authz) => Some(authz),
            None => self.envoy.as_mut(),
        };
        wait_for_http(addr, "/readyz", READY_TIMEOUT, proc);
    }

    fn wait_modelserver(&mut self) {
        let addr = loopback(self.ports.modelserver_http);
        wait_for_http(
            addr,
            "/v2/health/ready",
            READY_TIMEOUT,
            self.modelserver.as_mut(),
        );
    }

    fn wait_envoy(&mut self) {
        let admin = self.envoy_admin();
        wait_for_http(admin, "/ready", READY_TIMEOUT, self.envoy.as_mut());
        // The embedded mode has no authz cluster.
        let clusters: Vec<&str> = ENVOY_CLUSTERS
            .into_iter()
            .filter(|c| self.module_dir.is_none() || *c != "authz")
            .collect();
        self.wait_clusters_healthy(&clusters);
    }

    /// Waits until Envoy's active health checks report every named cluster's host healthy.
    ///
    /// # Panics
    /// After [`READY_TIMEOUT`], with Envoy's `/clusters` output and every log.
    pub fn wait_clusters_healthy(&mut self, clusters: &[&str]) {
        let admin = self.envoy_admin();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let body = http_get(admin, "/clusters")
                .map(|(_, b)| b)
                .unwrap_or_default();
            if clusters.iter().all(|c| cluster_healthy(&body, c)) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "envoy clusters {clusters:?} not healthy after {READY_TIMEOUT:?}; /clusters:\n{}\n{}",
                    body.lines()
                        .filter(|l| l.contains("health_flags"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until Envoy's active health checks mark `cluster`'s host unhealthy (after a
    /// process was stopped), so a test observes Envoy's steady state rather than a race.
    ///
    /// # Panics
    /// After [`READY_TIMEOUT`].
    pub fn wait_cluster_unhealthy(&self, cluster: &str) {
        let admin = self.envoy_admin();
        wait_until(
            &format!("envoy marks cluster {cluster} unhealthy"),
            READY_TIMEOUT,
            None,
            || {
                let body = http_get(admin, "/clusters")
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                body.contains(&format!("{cluster}::")) && !cluster_healthy(&body, cluster)
            },
        );
    }

    // ---- fault injection -------------------------------------------------------------------

    /// Kills authz (SIGKILL). Envoy keeps running and, failing closed, answers 503.
    pub fn stop_authz(&mut self) {
        if let Some(p) = self.authz.as_mut() {
            p.kill();
        }
    }

    /// Starts authz again with the same config and ports and waits until it and Envoy's health
    /// check of it are ready.
    pub fn start_authz(&mut self) {
        self.stop_authz();
        self.authz = Some(self.spawn_authz());
        self.wait_authz();
        self.wait_clusters_healthy(&["authz"]);
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`, which starts a drain) to the first model server.
    pub fn signal_modelserver(&self, signal: i32) {
        if let Some(p) = self.modelserver.as_ref() {
            p.signal(signal);
        }
    }

    /// Kills the model server (SIGKILL).
    pub fn stop_modelserver(&mut self) {
        if let Some(p) = self.modelserver.as_mut() {
            p.kill();
        }
    }

    /// Starts the model server again and waits until it and Envoy's health checks are ready.
    pub fn start_modelserver(&mut self) {
        self.stop_modelserver();
        self.modelserver = Some(self.spawn_modelserver());
        self.wait_modelserver();
        self.wait_clusters_healthy(&["modelserver_http", "modelserver_grpc"]);
    }

    /// Kills redis-server (SIGKILL); its port stays the one authz is configured with.
    ///
    /// # Panics
    /// When the stack was started without Redis.
    pub fn stop_redis(&mut self) {
        self.redis
            .as_mut()
            .expect("stop_redis on a stack started without Redis")
            .kill();
    }

    /// Starts redis-server again on the same port, empty (no persistence).
    ///
    /// # Panics
    /// When the stack was started without Redis, or Redis does not come up.
    pub fn start_redis(&mut self) {
        assert!(
            self.ports.redis.is_some(),
            "start_redis on a stack started without Redis"
        );
        self.stop_redis();
        self.redis = Some(self.spawn_redis());
        self.wait_redis();
    }

    // ---- what tests use --------------------------------------------------------------------

    /// The ports in use.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// `http://127.0.0.1:PORT` of Envoy's ingress: the only address a client should use.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.envoy)
    }

    /// Envoy's ingress address.
    pub fn envoy_addr(&self) -> SocketAddr {
        loopback(self.ports.envoy)
    }

    /// Envoy's admin address.
    pub fn envoy_admin(&self) -> SocketAddr {
        loopback(self.ports.envoy_admin)
    }

    /// `redis://127.0.0.1:PORT`, when the stack has Redis.
    pub fn redis_url(&self) -> Option<String> {
        self.ports.redis.map(|p| format!("redis://127.0.0.1:{p}"))
    }

    /// A fresh dev JWT (1 h) for `sub` with `roles`, signed by this stack's dev issuer
    /// (`authz token`).
    ///
    /// # Panics
    /// When `authz token` fails, with its output.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        let out = Command::new(&self.authz_bin)
            .args([
                "token",
                "--sub",
                sub,
                "--roles",
                &roles.join(","),
                "--ttl",
                "1h",
            ])
            .arg("--key")
            .arg(&self.key_path)
            .output()
            .expect("authz token can be started");
        assert!(
            out.status.success(),
            "authz token failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The authz binary the stack runs (for its CLI: `token`, `audit verify`, ...).
    pub fn authz_bin(&self) -> &Path {
        &self.authz_bin
    }

    /// The generated authz config file (after the stack's adjustments).
    pub fn authz_config_path(&self) -> &Path {
        &self.config_path
    }

    /// The generated authz config, parsed.
    pub fn authz_config(&self) -> toml::Table {
        let text =
            fs::read_to_string(&self.config_path).expect("the generated authz config exists");
        toml::from_str(&text).expect("the generated authz config is TOML")
    }

    /// The active audit file (`<audit dir>/audit.jsonl`), when the stack's authz has an
    /// `[audit]` section.
    pub fn audit_path(&self) -> Option<PathBuf> {
        self.audit_dir.as_ref().map(|d| d.join("audit.jsonl"))
    }

    /// Every JSON line of the active audit file so far (header records included).
    ///
    /// # Panics
    /// When the stack has no audit section.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let path = self
            .audit_path()
            .expect("this stack's authz config has no [audit] section");
        json_lines(&fs::read_to_string(path).unwrap_or_default())
    }

    /// Waits up to 5 s for an audit record with `decision_id` and returns it.
    pub fn audit_record(&self, decision_id: &str) -> Option<serde_json::Value> {
        poll(Duration::from_secs(5), || {
            self.audit_records()
                .into_iter()
                .find(|r| r["decision_id"] == decision_id)
        })
    }

    /// Every JSON line Envoy has written to stdout (its access log), oldest first.
    pub fn envoy_access_log(&self) -> Vec<serde_json::Value> {
        self.envoy
            .as_ref()
            .map(|p| json_lines(&p.logs()))
            .unwrap_or_default()
    }

    /// Waits up to 5 s for Envoy's access-log entry of the request sent with `User-Agent:
    /// user_agent` (tests give each request a unique one to find its entry).
    pub fn access_log_entry(&self, user_agent: &str) -> Option<serde_json::Value> {
        poll(Duration::from_secs(5), || {
            self.envoy_access_log()
                .into_iter()
                .find(|e| e["user_agent"] == user_agent)
        })
    }

    /// `POST /v2/models/{model}/infer` through Envoy with the demo body of `model`
    /// ([`demo_infer_body`]), a bearer `token` and an `x-access-reason` when given, and
    /// `user_agent` as the User-Agent (to find the request in the access log).
    pub fn infer(
        &self,
        token: Option<&str>,
        model: &str,
        reason: Option<&str>,
        user_agent: &str,
    ) -> HttpResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("user-agent", user_agent)];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        if let Some(r) = reason {
            headers.push(("x-access-reason", r));
        }
        self.request(
            "POST",
            &format!("/v2/models/{model}/infer"),
            &headers,
            Some(demo_infer_body(model)),
        )
    }

    /// One Envoy counter or gauge by its full name (`/stats?format=json`); `None` when absent.
    pub fn envoy_stat(&self, name: &str) -> Option<u64> {
        let (_, body) = http_get(
            self.envoy_admin(),
            &format!("/stats?format=json&filter=^{name}$"),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["stats"].as_array()?.iter().find(|s| s["name"] == name)?["value"].as_u64()
    }

    /// Requests Envoy has sent to the model server over both clusters (REST and gRPC);
    /// active health checks are not counted.
    pub fn envoy_requests_to_modelserver(&self) -> u64 {
        ["modelserver_http", "modelserver_grpc"]
            .iter()
            .map(|c| {
                self.envoy_stat(&format!("cluster.{c}.upstream_rq_total"))
                    .unwrap_or(0)
            })
            .sum()
    }

    /// authz's Prometheus text (`/metrics` on its admin port), in both modes.
    ///
    /// # Panics
    /// When authz's admin port does not answer.
    pub fn authz_metrics(&self) -> String {
        let (status, body) = http_get(self.authz_admin(), "/metrics")
            .expect("authz's admin port answers (the module's, in the embedded mode)");
        assert_eq!(status, 200, "authz /metrics: {body}");
        body
    }

    /// Whether authz runs inside Envoy (the embedded mode) rather than behind ext_authz.
    pub fn embedded(&self) -> bool {
        self.module_dir.is_some()
    }

    /// authz's admin address (`/healthz`, `/readyz`, `/metrics`), in both modes.
    pub fn authz_admin(&self) -> SocketAddr {
        loopback(self.ports.authz_admin)
    }

    /// The model server's Prometheus text (`/metrics` on its metrics port).
    ///
    /// # Panics
    /// When the model server does not answer.
    pub fn modelserver_metrics(&self) -> String {
        let (status, body) = http_get(loopback(self.ports.modelserver_metrics), "/metrics")
            .expect("the model server's metrics port answers");
        assert_eq!(status, 200, "modelserver /metrics: {body}");
        body
    }

    /// Everything the model server has logged so far.
    pub fn modelserver_logs(&self) -> String {
        self.modelserver
            .as_ref()
            .map(Process::logs)
            .unwrap_or_default()
    }

    /// Envoy's own log (stderr) and access log (stdout) so far.
    pub fn envoy_logs(&self) -> String {
        self.envoy.as_ref().map(Process::logs).unwrap_or_default()
    }

    /// Whether Envoy still runs (a crash in a dynamic module takes it down).
    pub fn envoy_running(&mut self) -> bool {
        self.envoy.as_mut().is_some_and(Process::is_running)
    }

    /// The sum of one model server metric over every series whose labels contain `model="M"`
    /// (every series when `model` is `None`).
    pub fn modelserver_metric(&self, name: &str, model: Option<&str>) -> f64 {
        sum_metric(&self.modelserver_metrics(), name, model)
    }

    /// As [`Stack::modelserver_metric`], from the replica ([`StackBuilder::modelserver_replica`]).
    ///
    /// # Panics
    /// Without a replica, or when it does not answer.
    pub fn replica_metric(&self, name: &str, model: Option<&str>) -> f64 {
        let [_, _, metrics] = self.replica_ports.expect("a stack with a replica");
        let (status, body) =
            http_get(loopback(metrics), "/metrics").expect("the replica's metrics port answers");
        assert_eq!(status, 200, "replica /metrics: {body}");
        sum_metric(&body, name, model)
    }

    /// Runs `e2e/tests/oip_grpc_client.py` (the unmodified `tritonclient`, from the bootstrap
    /// venv) with `cases` (see the script's docs) against Envoy's ingress over gRPC; returns its
    /// answers by case name.
    ///
    /// # Panics
    /// When the client cannot run or fails, with its output and the stack's logs.
    pub fn tritonclient_grpc(
        &self,
        cases: serde_json::Value,
    ) -> std::collections::HashMap<String, serde_json::Value> {
        let python = tool("python3");
        let script = repo_root().join("e2e/tests/oip_grpc_client.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 can be started");
        let input =
            serde_json::json!({"url": format!("127.0.0.1:{}", self.ports.envoy), "cases": cases});
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.to_string().as_bytes())
            .expect("the client reads its cases");
        let out = child.wait_with_output().expect("the client runs");
        assert!(
            out.status.success(),
            "{} {} failed (it needs tritonclient[grpc] from the bootstrap venv: `source .tools/env`):\n{}{}\n{}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("the client prints JSON lines")
            })
            .map(|v| (v["name"].as_str().unwrap_or_default().to_string(), v))
            .collect()
    }

    /// Requests the model server has seen (`nv_inference_request_success` +
    /// `nv_inference_request_failure`) over all models.
    pub fn modelserver_requests_seen(&self) -> f64 {
        let text = self.modelserver_metrics();
        sum_metric(&text, "nv_inference_request_success", None)
            + sum_metric(&text, "nv_inference_request_failure", None)
    }

    /// An HTTP/1.1 request to Envoy's ingress, sent byte for byte as given (the path is not
    /// normalised by any client library).
    ///
    /// # Panics
    /// On a connection error, with the stack's logs.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpResponse {
        http_request(self.envoy_addr(), method, path, headers, body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} through envoy failed: {e}\n{}",
                self.diagnostics()
            )
        })
    }

    /// The last lines of every process's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (name, p) in [
            ("envoy", &self.envoy),
            ("authz", &self.authz),
            ("modelserver", &self.modelserver),
            ("modelserver-replica", &self.replica),
            ("redis-server", &self.redis),
        ] {
            let Some(p) = p else { continue };
            let logs = p.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            out.push_str(&format!(
                "----- last {} lines of {name} -----\n",
                tail.len()
            ));
            for l in tail {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// A valid OIP REST inference body for each demo model (models/README.md); for any other name
/// the `benchmark-echo` body (the server then rejects it, or authz denies first).
pub fn demo_infer_body(model: &str) -> &'static str {
    match model {
        "mission-summarizer" => {
            r#"{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,8],"data":["urgent","medevac","for","two","casualties","at","the","checkpoint"]}]}"#
        }
        "threat-triage" => {
            r#"{"inputs":[{"name":"FEATURES","datatype":"FP32","shape":[1,8],"data":[0,0,0,1.0,1.0,0.5,1.0,0]}]}"#
        }
        _ => {
            r#"{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["hello, gateway"]}]}"#
        }
    }
}

/// Resolves a binary: the override variable when set, else the cargo-built one.
fn binary(name: &str, override_var: &str) -> PathBuf {
    match std::env::var_os(override_var) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "{override_var}={} does not exist", p.display());
            p
        }
        None => crate::workspace_binary(name),
    }
}

/// Makes the child receive SIGKILL when the thread that spawned it exits (PR_SET_PDEATHSIG), so a
/// killed or finished test binary leaves nothing running.
fn die_with_parent(mut cmd: Command) -> Command {
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe prctl(2).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Rewrites the generated authz config for this stack; returns the audit directory when the
/// config has an `[audit]` section afterwards.
fn configure_authz(path: &Path, dir: &Path, ports: &Ports, b: &StackBuilder) -> Option<PathBuf> {
    let text = fs::read_to_string(path).expect("authz dev-init wrote authz.toml");
    let mut doc: toml::Table = toml::from_str(&text).expect("authz dev-init writes valid TOML");
    set(
        &mut doc,
        "server.grpc_addr",
        format!("127.0.0.1:{}", ports.authz_grpc).into(),
    );
    set(
        &mut doc,
        "server.admin_addr",
        format!("127.0.0.1:{}", ports.authz_admin).into(),
    );
    match ports.redis {
        Some(port) => {
            set(
                &mut doc,
                "rate_limit.redis_url",
                format!("redis://127.0.0.1:{port}").into(),
            );
            if let Some(rl) = doc
                .get_mut("rate_limit")
                .and_then(toml::Value::as_table_mut)
            {
                rl.remove("redis_cluster_nodes");
            }
        }
        None => {
            if let Some(rl) = doc
                .get_mut("rate_limit")
                .and_then(toml::Value::as_table_mut)
            {
                rl.remove("redis_url");
                rl.remove("redis_cluster_nodes");
            }
        }
    }
    if b.authz_unix_socket {
        let socket = dir.join("authz.sock");
        set(
            &mut doc,
            "server.grpc_unix_socket",
            socket.display().to_string().into(),
        );
    }
    let audit_dir = if b.audit || doc.contains_key("audit") {
        let audit = dir.join("audit");
        fs::create_dir_all(&audit).expect("the audit directory can be created");
        // A trailing `/` marks a directory for the audit module.
        set(
            &mut doc,
            "audit.path",
            format!("{}/", audit.display()).into(),
        );
        Some(audit)
    } else {
        None
    };
    for (key, value) in &b.settings {
        set(&mut doc, key, value.clone());
    }
    let out = toml::to_string(&doc).expect("a TOML table serializes");
    fs::write(path, out).expect("the authz config can be rewritten");
    audit_dir
}

/// Sets `doc[a][b]...[z] = value` for the dotted path `a.b....z`, creating tables on the way.
fn set(doc: &mut toml::Table, dotted_path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted_path.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut table = doc;
    for part in parts {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .unwrap_or_else(|| panic!("{dotted_path}: `{part}` is not a table in the config"));
    }
    table.insert(last.to_string(), value);
}

/// Whether `/clusters` output shows `cluster` with at least one host and every host healthy.
fn cluster_healthy(clusters_output: &str, cluster: &str) -> bool {
    let prefix = format!("{cluster}::");
    let flags: Vec<&str> = clusters_output
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("::health_flags::"))
        .filter_map(|l| l.rsplit("::").next())
        .collect();
    !flags.is_empty() && flags.iter().all(|f| *f == "healthy")
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sums a Prometheus text family over the series whose labels include `model="M"`.
fn sum_metric(text: &str, name: &str, model: Option<&str>) -> f64 {
    let label = model.map(|m| format!("model=\"{m}\""));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (family, labels) = match series.split_once('{') {
                Some((f, rest)) => (f, rest),
                None => (series, ""),
            };
            if family != name {
                return None;
            }
            if let Some(label) = &label
                && !labels.contains(label.as_str())
            {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// An HTTP response as the client saw it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `error.code` of the gateway's JSON error body.
    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_string)
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) to `addr` exactly as given and reads the whole
/// response.
///
/// # Errors
/// Connection or read errors, or a response that is not HTTP.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    // Read until the response is complete rather than until EOF: Envoy delays closing a
    // connection it answered early (a direct response, a rejected request) by up to a second.
    while !response_complete(&raw) {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    parse_response(&raw)
}

/// Whether `raw` holds a whole response: its head and a body of `Content-Length` bytes or a
/// chunked body up to the last chunk. Without either, the body ends at EOF (false here).
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return true;
    }
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n")
                && (body.len() == 5 || body.windows(7).any(|w| w == b"\r\n0\r\n\r\n"));
        }
    }
    false
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let not_http = || std::io::Error::other(format!("not an HTTP response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(not_http)?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(not_http)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        crate::dechunk(body)
    } else {
        body.to_string()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_health_needs_every_host_healthy() {
        let out = "authz::127.0.0.1:1::health_flags::healthy\n\
                   modelserver_http::127.0.0.1:2::health_flags::/failed_active_hc\n";
        assert!(cluster_healthy(out, "authz"));
        assert!(!cluster_healthy(out, "modelserver_http"));
        assert!(
            !cluster_healthy(out, "modelserver_grpc"),
            "absent is not healthy"
        );
    }

    #[test]
    fn metric_sums_by_model_label() {
        let text = "# TYPE nv_inference_count counter\n\
                    nv_inference_count{model=\"a\",version=\"1\"} 2\n\
                    nv_inference_count{model=\"a\",version=\"2\"} 3\n\
                    nv_inference_count{model=\"ab\",version=\"1\"} 7\n\
                    nv_inference_count_other{model=\"a\"} 100\n";
        assert_eq!(sum_metric(text, "nv_inference_count", Some("a")), 5.0);
        assert_eq!(sum_metric(text, "nv_inference_count", None), 12.0);
    }

    #[test]
    fn dotted_settings_create_tables() {
        let mut doc = toml::Table::new();
        set(
            &mut doc,
            "models.benchmark-echo.rate_limit.on_store_error",
            "allow".into(),
        );
        assert_eq!(
            doc["models"]["benchmark-echo"]["rate_limit"]["on_store_error"].as_str(),
            Some("allow")
        );
    }

    #[test]
    fn chunked_responses_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.header("x-a")),
            (200, "abcde", Some("b"))
        );
    }
}
