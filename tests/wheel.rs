//! The wheel, as a Databricks App gets it: built by scripts/wheel.sh (scripts/test.sh builds one
//! of the tests' own build with `--test` and passes its path in DEVBOX_WHEEL; given the shipped
//! one, the platform tag and the Apps' 10 MB file limit are checked too), installed with pip
//! into a fresh venv from the file alone (no index), and working — on its own, and as the
//! example app in examples/databricks-app runs it.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{CLIENT_ID, CLIENT_SECRET, Emulator, free_port};

/// Databricks Apps reject any file of 10 MB or more in the app directory.
const APP_FILE_LIMIT: u64 = 10 * 1000 * 1000;

fn wheel() -> Option<PathBuf> {
    let wheel = std::env::var_os("DEVBOX_WHEEL").map(PathBuf::from);
    if let Some(wheel) = &wheel {
        // A path that names nothing is a broken setup, not a reason to skip (cargo runs tests
        // from host/, so a relative path would silently miss).
        assert!(
            wheel.is_absolute() && wheel.is_file(),
            "DEVBOX_WHEEL={} is not an absolute path to a file",
            wheel.display()
        );
    } else {
        let message =
            "SKIPPED: the wheel tests need DEVBOX_WHEEL (run scripts/test.sh, which builds it with scripts/wheel.sh)";
        assert!(!support::must_not_skip(), "{message}; in CI this is a failure");
        eprintln!("{message}");
    }
    wheel
}

/// A fresh venv with `args` pip-installed from files only.
fn venv(dir: &Path, args: &[&str], cwd: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap();
    assert!(status.success());
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--no-index", "--disable-pip-version-check", "--quiet"])
        .args(args)
        .current_dir(cwd)
        .env_remove("PIP_FIND_LINKS")
        .output()
        .unwrap();
    assert!(out.status.success(), "pip install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    venv
}

#[test]
fn the_wheel_installs_offline_and_provisions() {
    let Some(wheel) = wheel() else { return };
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("devbox_auth-") && name.ends_with(".whl"), "{name}");
    // The shipped wheel (scripts/wheel.sh, which refuses to build one of 9.5 MB or more): its
    // platform tag and the Apps' file limit. The tests' own wheel (--test) is neither.
    if name.contains("manylinux") {
        let size = std::fs::metadata(&wheel).unwrap().len();
        assert!(size < APP_FILE_LIMIT, "{} is {size} bytes", wheel.display());
        assert!(name.contains("manylinux_2_17_x86_64"), "{name}");
    }

    let dir = tempfile::tempdir().unwrap();
    let venv = venv(dir.path(), &[wheel.to_str().unwrap()], dir.path());
    let bin = venv.join("bin/devbox-auth");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with(&format!("devbox-auth {} (", env!("CARGO_PKG_VERSION"))), "{version}");

    let emulator = Emulator::start();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = Command::new(&bin)
        .arg("provision")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("DATABRICKS_HOST", &emulator.url)
        .env("DATABRICKS_CLIENT_ID", CLIENT_ID)
        .env("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    let out = support::Outcome::from(out);
    out.success().leaks_none_of(&emulator.secrets());
    let config = std::fs::read_to_string(home.join(".claude-code-router/config.json")).unwrap();
    assert!(config.contains(&emulator.live_tokens()[0].0));
    let settings = std::fs::read_to_string(home.join(".claude/settings.json")).unwrap();
    assert!(
        settings.contains(&format!("{} token --home", bin.display())),
        "the helper is the venv's binary: {settings}"
    );
}

/// The `command` list of an app.yaml (a JSON-style flow sequence, as the example writes it).
fn app_command(app_yaml: &str) -> Vec<String> {
    let line = app_yaml.lines().find_map(|l| l.strip_prefix("command:")).expect("a command line");
    serde_json::from_str(line.trim()).expect("command is a flow sequence of strings")
}

#[test]
fn the_example_app_starts_after_provisioning_and_serves_its_page() {
    let Some(wheel) = wheel() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/databricks-app");
    std::fs::create_dir_all(app.join("wheels")).unwrap();
    for file in ["app.yaml", "app.py", "requirements.txt"] {
        std::fs::copy(example.join(file), app.join(file)).unwrap();
    }
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::copy(&wheel, app.join("wheels").join(&name)).unwrap();
    // The example names the shipped wheel; the tests' own wheel has another platform tag.
    let requirements = std::fs::read_to_string(app.join("requirements.txt")).unwrap();
    let line = requirements.lines().find(|l| l.starts_with("./wheels/devbox_auth-")).expect("the wheel's line");
    std::fs::write(app.join("requirements.txt"), requirements.replace(line, &format!("./wheels/{name}"))).unwrap();
    // What Apps do at deploy: install requirements.txt into the app's venv.
    let venv = venv(dir.path(), &["-r", "requirements.txt"], &app);

    let emulator = Emulator::start();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let port = free_port();
    let command = app_command(&std::fs::read_to_string(app.join("app.yaml")).unwrap());
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("DATABRICKS_HOST", &emulator.url)
        .env("DATABRICKS_CLIENT_ID", CLIENT_ID)
        .env("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
        .env("DATABRICKS_APP_PORT", port.to_string())
        .current_dir(&app)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            write!(stream, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
            let mut page = String::new();
            stream.read_to_string(&mut page).unwrap();
            break page;
        }
        assert!(child.try_wait().unwrap().is_none(), "the app exited before serving");
        assert!(Instant::now() < deadline, "the app did not answer on {port}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert!(page.contains("DevBox is up") && page.contains("~/.claude-code-router/config.json: ready"), "{page}");
    assert!(home.join(".claude-code-router/config.json").exists());
    assert_eq!(emulator.live_tokens().len(), 1);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    support::assert_no_secret("stderr", &stderr, &emulator.secrets());
    assert!(status.code().is_some(), "watch exited on SIGTERM: {stderr}");
}
