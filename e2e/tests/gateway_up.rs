//! `scripts/up.sh`, the run command behind `make up`, as a user runs it: it brings the stack up,
//! the curl it prints works when pasted, Ctrl-C stops every process and frees every port, and a
//! taken port is a clear error; in both authz modes (`AUTHZ_MODE=embedded`: the module in Envoy). Run on free ports, with the debug binaries and temporary
//! `.run`/`.dev` folders (the script's `*_PORT`, `UP_BIN_DIR`, `UP_RUN_DIR`, `UP_DEV_DIR`).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Process, free_port, repo_root, workspace_binary};

const PORT_VARS: [&str; 8] = [
    "ENVOY_PORT",
    "ENVOY_ADMIN_PORT",
    "AUTHZ_GRPC_PORT",
    "AUTHZ_ADMIN_PORT",
    "MODELSERVER_HTTP_PORT",
    "MODELSERVER_GRPC_PORT",
    "MODELSERVER_METRICS_PORT",
    "REDIS_PORT",
];

/// `bash scripts/up.sh` with the given ports and temporary folders under `dir`.
fn up_command(ports: &[(&str, u16)], dir: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/up.sh"));
    with_up_env(cmd, ports, dir)
}

/// `scripts/up.sh` started the way a background launch starts it (`make up &`, nohup, some CI
/// runners): with SIGINT ignored, which bash cannot trap. Issue 12: Ctrl-C then stopped authz
/// first and up.sh reported it as crashed.
fn up_command_sigint_ignored(ports: &[(&str, u16)], dir: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "trap '' INT; exec bash \"$0\""])
        .arg(repo_root().join("scripts/up.sh"));
    with_up_env(cmd, ports, dir)
}

/// The script's environment: the debug binaries' folder, the ports, temporary run/dev folders.
fn with_up_env(mut cmd: Command, ports: &[(&str, u16)], dir: &Path) -> Command {
    // The folder of the binaries the Stack would use (E2E_AUTHZ_BIN overrides, see e2e::stack).
    let authz = std::env::var_os("E2E_AUTHZ_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_binary("authz"));
    let bin_dir = authz
        .parent()
        .expect("a binary lives in a folder")
        .to_path_buf();
    cmd.env("UP_BIN_DIR", bin_dir)
        .env("UP_RUN_DIR", dir.join("run"))
        .env("UP_DEV_DIR", dir.join("dev"))
        .env("ORT_DYLIB_PATH", e2e::ort_dylib());
    for (var, port) in ports {
        cmd.env(var, port.to_string());
    }
    cmd
}

/// Eight distinct free ports, one per variable (the kernel may repeat a just-released port).
fn free_ports() -> Vec<(&'static str, u16)> {
    let mut out: Vec<(&'static str, u16)> = Vec::new();
    for var in PORT_VARS {
        let port = loop {
            let p = free_port();
            if !out.iter().any(|(_, q)| *q == p) {
                break p;
            }
        };
        out.push((var, port));
    }
    out
}

fn port_free(port: u16) -> bool {
    // std's listener sets SO_REUSEADDR like the servers do, so TIME_WAIT does not count.
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn make_up_prints_a_working_curl_and_ctrl_c_frees_every_port_even_launched_in_the_background() {
    up_serves_the_printed_curl_and_stops_cleanly("service", 4);
}

/// `AUTHZ_MODE=embedded make up`: no authz process; Envoy decides with the module.
#[test]
fn authz_mode_embedded_serves_the_same_curl_with_three_processes() {
    e2e::workspace_module();
    up_serves_the_printed_curl_and_stops_cleanly("embedded", 3);
}

/// Runs up.sh in `mode` (AUTHZ_MODE) launched with SIGINT ignored, pastes the curl it prints,
/// then Ctrl-C: the `processes` it started are gone and every port is free.
fn up_serves_the_printed_curl_and_stops_cleanly(mode: &str, processes: usize) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let ports = free_ports();
    let mut cmd = up_command_sigint_ignored(&ports, dir.path());
    cmd.env("AUTHZ_MODE", mode);
    let mut up = Process::spawn("up.sh", cmd);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !up.logs().contains("Press Ctrl-C") {
        assert!(up.is_running(), "up.sh exited early:\n{}", up.logs());
        assert!(
            Instant::now() < deadline,
            "up.sh not ready after 120 s:\n{}",
            up.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = up.logs();

    // The printed command, pasted into a shell as is.
    let start = out.find("curl -s ").expect("a curl command is printed");
    let end = out[start..]
        .find("}]}'")
        .map(|i| start + i + 4)
        .expect("the curl command ends with its JSON body");
    let curl = &out[start..end];
    assert!(curl.contains("x-access-reason"), "{curl}");
    let pasted = Command::new("bash")
        .args(["-c", curl])
        .output()
        .expect("bash runs the pasted curl");
    let answer: serde_json::Value = serde_json::from_slice(&pasted.stdout).unwrap_or_else(|e| {
        panic!(
            "the pasted curl did not print JSON ({e}): {}{}\nup.sh said:\n{out}",
            String::from_utf8_lossy(&pasted.stdout),
            String::from_utf8_lossy(&pasted.stderr)
        )
    });
    assert_eq!(answer["model_name"], "mission-summarizer", "{answer}");
    let summary = answer["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "SUMMARY"))
        .map(|t| t["data"][0].clone());
    assert_eq!(summary, Some("medical".into()), "{answer}");

    // Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
    let pids: Vec<i32> = out
        .lines()
        .filter_map(|l| l.split("(pid ").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), processes, "{mode}: processes started: {out}");
    up.signal(libc::SIGINT);
    let code = up.wait_exit(Duration::from_secs(30));
    let out = up.logs();
    assert_eq!(
        code,
        Some(130),
        "up.sh exit status after Ctrl-C; it said:\n{out}"
    );
    assert!(out.contains("no port left bound"), "{out}");
    for pid in pids {
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "pid {pid} still runs after Ctrl-C:\n{out}");
    }
    for (var, port) in &ports {
        assert!(port_free(*port), "{var}={port} still bound after Ctrl-C");
    }
}

#[test]
fn a_taken_port_is_a_clear_error_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let taken = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let taken_port = taken.local_addr().expect("bound").port();
    let mut ports = free_ports();
    ports[4].1 = taken_port; // MODELSERVER_HTTP_PORT
    let out = up_command(&ports, dir.path())
        .output()
        .expect("bash runs up.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "port {taken_port} (modelserver REST) is already in use"
        )) && stderr.contains("MODELSERVER_HTTP_PORT"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("run/logs").exists(),
        "nothing is started or written before the port check"
    );
}
