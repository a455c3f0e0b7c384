//! The `authz` binary as an operator uses it: dev-init, token, check-config (exit 64),
//! policy test, and serve with SIGHUP reload and SIGTERM drain.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn authz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authz"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("authz binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn dev_init(dir: &Path) -> PathBuf {
    let out = run(authz()
        .args(["dev-init", "--out"])
        .arg(dir)
        .arg("--template")
        .arg(repo().join("config/authz.toml")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("authz.toml")
}

#[test]
fn check_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[policy]\nschema = \"missing.cedarschema\"\nfiles = [\"missing.cedar\"]\n\
         [[authn.issuers]]\nissuer = \"https://i\"\naudiences = []\njwks_file = \"j.json\"\nalgorithms = [\"HS256\"]\n\
         [models.m]\nallowed_roles = []\nsensitivity = \"low\"\nrate_limit = { rate = 1, period = \"60s\" }\n",
    )
    .unwrap();
    let out = run(authz().args(["check-config", "--config"]).arg(&cfg));
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    for want in [
        "authn.issuers[0].audiences",
        "authn.issuers[0].algorithms[0]",
        "models.m.allowed_roles",
    ] {
        assert!(err.contains(want), "missing {want} in:\n{err}");
    }
    // Semantic problems found, then file problems (policy, keys) in a second pass.
    std::fs::write(
        &cfg,
        "[policy]\nschema = \"missing.cedarschema\"\nfiles = [\"missing.cedar\"]\n\
         [[authn.issuers]]\nissuer = \"https://i\"\naudiences = [\"a\"]\njwks_file = \"j.json\"\n",
    )
    .unwrap();
    let out = run(authz().args(["check-config", "--config"]).arg(&cfg));
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    for want in [
        "missing.cedarschema",
        "missing.cedar",
        "authn.issuers[0].jwks_file",
    ] {
        assert!(err.contains(want), "missing {want} in:\n{err}");
    }
    let out = run(authz().args(["serve", "--config"]).arg(&cfg));
    assert_eq!(
        out.status.code(),
        Some(64),
        "serve refuses a bad config the same way"
    );
}

#[test]
fn dev_init_token_and_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dev_init(dir.path());
    let out = run(authz().args(["check-config", "--config"]).arg(&cfg));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = dir.path().join("issuer-key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let out = run(authz()
        .args([
            "token",
            "--sub",
            "analyst-1",
            "--roles",
            "analyst,mission-user",
            "--ttl",
            "15m",
            "--key",
        ])
        .arg(&key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    assert_eq!(token.lines().count(), 1, "prints only the token");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3);
    let keys = authz::authn::jwks::parse_jwks(
        "jwks",
        &std::fs::read(dir.path().join("jwks.json")).unwrap(),
        &[jsonwebtoken::Algorithm::EdDSA],
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["inference-gateway"]);
    v.set_issuer(&["https://issuer.authz.dev"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &keys[0].key, &v).unwrap();
    assert_eq!(data.claims["sub"], "analyst-1");
    assert_eq!(
        data.claims["roles"],
        serde_json::json!(["analyst", "mission-user"])
    );
    let exp = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
    assert_eq!(exp, 900);
    let out = run(authz()
        .args(["token", "--sub", "x", "--ttl", "soon", "--key"])
        .arg(&key));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--ttl"));
}

#[test]
fn shipped_policy_cases_pass_and_mismatches_are_listed() {
    let cfg = repo().join("config/authz.toml");
    let out = run(authz()
        .args(["policy", "test", "--config"])
        .arg(&cfg)
        .arg(repo().join("config/policy-cases.toml")));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("0 failed"));

    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"wrong-1\"\nprincipal = \"analyst-1\"\nmodel = \"threat-triage\"\nreason = \"x\"\nexpect = \"allow\"\n\
         [[case]]\nname = \"right\"\nprincipal = \"admin-1\"\nmodel = \"threat-triage\"\nreason = \"x\"\nexpect = \"allow\"\n\
         [[case]]\nname = \"wrong-2\"\nprincipal = \"analyst-1\"\nmodel = \"mission-summarizer\"\nexpect = \"deny\"\ncode = \"role_not_allowed\"\n",
    )
    .unwrap();
    let out = run(authz()
        .args(["policy", "test", "--config"])
        .arg(&cfg)
        .arg(&cases));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL wrong-1: expected Allow, got Deny (role_not_allowed)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("FAIL wrong-2: expected Deny (role_not_allowed), got Deny (reason_required)"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL right"), "{stdout}");
    assert!(stdout.contains("3 cases, 1 passed, 2 failed"), "{stdout}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    Some((status, buf))
}

/// Kills the server if the test fails before it exits by itself (no process outlives a test).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn serve_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dev_init(dir.path());
    let (grpc, admin) = (free_port(), free_port());
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:9001", &format!("127.0.0.1:{grpc}"))
        .replace("127.0.0.1:9002", &format!("127.0.0.1:{admin}"))
        .replace(
            "reload_poll_interval = \"2s\"",
            "reload_poll_interval = \"0s\"",
        );
    std::fs::write(&cfg, &text_cfg).unwrap();
    let mut child = KillOnDrop(
        authz()
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id() as i32;
    wait_for("/readyz", || {
        http_get(admin, "/readyz").is_some_and(|(s, _)| s == 200)
    });

    // An invalid config plus SIGHUP: rejected, counted, still serving.
    std::fs::write(
        &cfg,
        text_cfg.replacen("period = \"60s\"", "period = \"soon\"", 1),
    )
    .unwrap();
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("failed reload metric", || {
        http_get(admin, "/metrics")
            .is_some_and(|(_, b)| b.contains("authz_config_reloads_total{result=\"failure\"} 1"))
    });
    std::fs::write(&cfg, &text_cfg).unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("successful reload metric", || {
        http_get(admin, "/metrics")
            .is_some_and(|(_, b)| b.contains("authz_config_reloads_total{result=\"success\"} 1"))
    });
    assert_eq!(http_get(admin, "/readyz").map(|r| r.0), Some(200));

    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err(),
        "gRPC port still bound"
    );
}

#[test]
fn dev_init_accepts_a_template_given_as_a_bare_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let template = std::fs::read_to_string(repo().join("config/authz.toml")).unwrap();
    // Relative paths in the template resolve against its folder: point them back at config/.
    let config_dir = repo().join("config").canonicalize().unwrap();
    let template = template.replace(
        "\"policies/",
        &format!("\"{}/policies/", config_dir.display()),
    );
    std::fs::write(work.join("x.toml"), template).unwrap();
    let out =
        run(authz()
            .current_dir(&work)
            .args(["dev-init", "--out", "dev", "--template", "x.toml"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(authz()
        .args(["check-config", "--config"])
        .arg(work.join("dev/authz.toml")));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `policy diff` and `policy replay` as a rollout uses them: the table, `--json`, and the exit
/// statuses 0 (no change), 1 (changes), 2 (cannot evaluate).
#[test]
fn policy_diff_and_replay_print_changes_and_exit_by_what_they_found() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dev_init(dir.path());
    let shipped = repo().join("config/policies/gateway.cedar");
    let candidate = dir.path().join("candidate.cedar");
    std::fs::write(
        &candidate,
        std::fs::read_to_string(&shipped).unwrap().replace(
            "when { principal in resource.allowed_roles };",
            "when { principal in resource.allowed_roles && !(principal in Gateway::Role::\"load-tester\") };",
        ),
    )
    .unwrap();
    let diff = |new: &Path| {
        run(authz()
            .args(["policy", "diff", "--config"])
            .arg(&cfg)
            .arg(&shipped)
            .arg(new))
    };
    let out = diff(&shipped);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = diff(&candidate);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("loses")
            && table.contains("load-tester (api_key)")
            && table.contains("benchmark-echo"),
        "{table}"
    );

    // An audit file with one load-tester decision, as the writer lays it out.
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(
        &audit,
        concat!(
            r#"{"v":3,"kind":"header","seq":0,"time":"2026-01-01T00:00:00.000000000Z","file_seq":0,"writer":"authz/0.1.0","prev_hash":"0","hash":"1"}"#, "\n",
            r#"{"v":3,"kind":"decision","seq":1,"time":"2026-01-01T00:00:00.000000000Z","decision_id":"0190f5a2-0000-7000-8000-000000000001","request_id":null,"trace_id":null,"principal":{"id":"load-tester","auth_method":"api_key","roles":["load-tester"]},"model":"benchmark-echo","version":null,"action":"infer","decision":"allow","status":200,"reason":"allowed","policy_ids":["permit-configured-roles"],"access_reason":null,"access_reason_truncated":false,"rate_limit":null,"source_ip":null,"latency_us":90,"request_time":1767225600,"prev_hash":"1","hash":"2"}"#, "\n",
        ),
    )
    .unwrap();
    let replay = |policy: &Path, json: bool| {
        let mut cmd = authz();
        cmd.args(["policy", "replay", "--config"])
            .arg(&cfg)
            .arg("--policy")
            .arg(policy);
        if json {
            cmd.arg("--json");
        }
        run(cmd.arg(&audit))
    };
    assert_eq!(replay(&shipped, false).status.code(), Some(0));
    let out = replay(&candidate, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            "load-tester  benchmark-echo  infer   allow (allowed) -> deny (role_not_allowed)  1"
        ),
        "{}",
        text(&out.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&replay(&candidate, true).stdout).unwrap();
    assert_eq!(json["changes"][0]["new_reason"], "role_not_allowed");
    assert_eq!(json["changes"][0]["count"], 1);
    let broken = dir.path().join("broken.cedar");
    std::fs::write(&broken, "permit(principal, action, resource);").unwrap();
    let out = replay(&broken, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("@id"), "{}", text(&out.stderr));
}
