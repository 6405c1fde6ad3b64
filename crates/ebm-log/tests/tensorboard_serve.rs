//! `just tensorboard`-style serving: start the real TensorBoard server on a run folder written by
//! ebm-log and check, through its HTTP API, that scalars, images, text and hparams show up.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The whole test gives up after this long.
const BUDGET: Duration = Duration::from_secs(60);

/// Kills the server when the test ends, whether it passed or panicked.
struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Server {
    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(3000);
        s[start..].to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 request to 127.0.0.1:`port`; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let resp = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(|| format!("malformed response: {resp:.200}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:.200}"))?;
    Ok((status, body.to_string()))
}

fn get_json(port: u16, path: &str) -> Result<Value, String> {
    let (status, body) = http(port, "GET", path, None)?;
    if status != 200 {
        return Err(format!("GET {path}: HTTP {status}: {body:.300}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body:.300}"))
}

fn post_json(port: u16, path: &str, body: &str) -> Result<Value, String> {
    let (status, resp) = http(port, "POST", path, Some(body))?;
    if status != 200 {
        return Err(format!("POST {path}: HTTP {status}: {resp:.300}"));
    }
    serde_json::from_str(&resp).map_err(|e| format!("POST {path}: {e}: {resp:.300}"))
}

fn start_server(logdir: &Path, port: u16) -> Server {
    let root = common::repo_root();
    let exe = root.join(".venv/bin/tensorboard");
    assert!(
        exe.exists(),
        "{} not found: run `just setup` and `just tensorboard` once (it installs tensorboard)",
        exe.display()
    );
    let log = logdir.with_extension("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(&exe)
        .arg("--logdir")
        .arg(logdir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    Server { child, log }
}

#[test]
fn tensorboard_server_shows_our_run() {
    let started = Instant::now();
    common::ensure_tensorboard();
    let tmp = tempfile::tempdir().unwrap();
    let logdir = tmp.path().join("runs");
    let run = ebm_log::RunDir::create(&logdir, "exp", Some("run-a")).unwrap();
    common::write_sample_run(run.tensorboard_dir());
    let run_name = "exp/run-a";

    let port = free_port();
    let mut server = start_server(&logdir, port);

    // Poll until the scalar tags of our run are served, within the budget.
    let mut last_err = String::new();
    let tags = loop {
        if started.elapsed() > BUDGET {
            panic!(
                "TensorBoard did not serve the run within {BUDGET:?}; last error: {last_err}\n\
                 server log:\n{}",
                server.log_tail()
            );
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("TensorBoard exited early ({status}); log:\n{}", server.log_tail());
        }
        match get_json(port, "/data/plugin/scalars/tags") {
            Ok(v) if v[run_name].get("train/loss").is_some() => break v,
            Ok(v) => last_err = format!("scalar tags so far: {v}"),
            Err(e) => last_err = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let check = |r: Result<Value, String>| r.unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log_tail()));

    let runs = check(get_json(port, "/data/runs"));
    assert_eq!(runs, serde_json::json!([run_name]));
    for tag in ["train/loss", "eval/nll", "hparam/nll"] {
        assert!(tags[run_name].get(tag).is_some(), "tag {tag} missing in {tags}");
    }

    let scalars =
        check(get_json(port, &format!("/data/plugin/scalars/scalars?run={}&tag={}", enc(run_name), enc("train/loss"))));
    // Rows are [wall_time, step, value].
    let rows = scalars.as_array().expect("scalar rows");
    assert_eq!(rows.len(), 11);
    assert_eq!(rows[4][1].as_i64(), Some(4));
    assert_eq!(rows[4][2].as_f64(), Some(f64::from(0.2f32)));

    let images = check(get_json(port, "/data/plugin/images/tags"));
    assert_eq!(images[run_name]["samples"]["samples"].as_i64(), Some(1), "{images}");

    let text = check(get_json(port, "/data/plugin/text/tags"));
    assert_eq!(text[run_name], serde_json::json!(["config"]));

    // The HParams tab: the session group of our run with its hparams and final metric.
    let groups = check(post_json(
        port,
        "/data/plugin/hparams/session_groups",
        r#"{"experimentName":"","allowedStatuses":["STATUS_SUCCESS","STATUS_UNKNOWN",
            "STATUS_FAILURE","STATUS_RUNNING"],"colParams":[],"startIndex":0,"sliceSize":100}"#,
    ));
    let g = &groups["sessionGroups"][0];
    assert_eq!(g["name"], run_name, "{groups}");
    assert_eq!(g["hparams"]["method"], "cd");
    assert_eq!(g["hparams"]["lr"].as_f64(), Some(0.01));
    assert_eq!(g["sessions"][0]["status"], "STATUS_SUCCESS");
    let metric = g["metricValues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"]["tag"] == "hparam/nll")
        .unwrap_or_else(|| panic!("no hparam/nll metric in {g}"));
    assert_eq!(metric["value"].as_f64(), Some(1.25));
    assert_eq!(metric["trainingStep"].as_i64(), Some(10));

    drop(server);
    assert!(started.elapsed() < BUDGET + Duration::from_secs(10));
}
