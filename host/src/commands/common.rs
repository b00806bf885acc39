//! What every command shares: the arguments of a policy run, the environment snapshot, the
//! home, HTTP settings, the run options, the async runtime, the stop signal, and the one way a
//! failure is printed and turned into an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::databricks::config::Env;
use crate::databricks::http::HttpSettings;
use crate::effects::LogLevel;
use crate::failure::Failure;
use crate::output;
use crate::provision::{self, PolicyChoice, ProvisionOptions};
use crate::runtime::Trigger;

/// What every command that runs the policy takes.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Home directory the config files go to.
    #[arg(long, env = "HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// A policy component (.wasm) to run instead of the embedded default.
    #[arg(long, env = "DEVBOX_AUTH_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The deployment's manifest: policy file and SHA-256 pin, grants, limits.
    #[arg(long, env = "DEVBOX_AUTH_MANIFEST", value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Total seconds for each workspace call, retries included.
    #[arg(long, env = "DEVBOX_AUTH_TIMEOUT_SECONDS", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Where compiled policies are cached ("off" disables). Default: $XDG_CACHE_HOME/devbox-auth or ~/.cache/devbox-auth.
    #[arg(long, env = "DEVBOX_AUTH_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<String>,
    /// Print the policy's info and debug messages too.
    #[arg(long, short)]
    pub verbose: bool,
}

impl RunArgs {
    /// The same arguments as a command line, for the `provision` runs `watch` starts.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        if let Some(home) = &self.home {
            push("--home", home.display().to_string());
        }
        if let Some(policy) = &self.policy {
            push("--policy", policy.display().to_string());
        }
        if let Some(manifest) = &self.manifest {
            push("--manifest", manifest.display().to_string());
        }
        push("--timeout", self.timeout.to_string());
        if let Some(cache) = &self.cache_dir {
            push("--cache-dir", cache.clone());
        }
        if self.verbose {
            args.push("-v".into());
        }
        args
    }
}

pub fn env_snapshot() -> Env {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

fn default_cache_dir(env: &Env) -> Option<PathBuf> {
    let non_empty = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty("XDG_CACHE_HOME")
        .map(|d| d.join("devbox-auth"))
        .or_else(|| non_empty("HOME").map(|h| h.join(".cache/devbox-auth")))
}

pub fn home_of(home: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    home.clone()
        .filter(|h| !h.as_os_str().is_empty())
        .ok_or_else(|| Failure::Usage("no home directory: set HOME or pass --home DIR".into()))
}

pub fn http_settings(timeout_seconds: u64, env: &Env) -> HttpSettings {
    let budget = Duration::from_secs(timeout_seconds);
    HttpSettings {
        retry_budget: budget,
        request_timeout: budget.min(Duration::from_secs(30)),
        connect_timeout: budget.min(Duration::from_secs(5)),
        extra_ca_file: env.get("SSL_CERT_FILE").filter(|f| !f.is_empty()).map(PathBuf::from),
        ..HttpSettings::default()
    }
}

/// Everything a policy run needs, from the flags, the environment and the manifest.
pub fn options(args: &RunArgs, trigger: Option<Trigger>, dry_run: bool) -> Result<ProvisionOptions, Failure> {
    options_with_env(args, env_snapshot(), trigger, dry_run)
}

/// The same, with the environment given (a token helper's rotation restores the deployment's).
pub fn options_with_env(
    args: &RunArgs,
    env: Env,
    trigger: Option<Trigger>,
    dry_run: bool,
) -> Result<ProvisionOptions, Failure> {
    let home = home_of(&args.home)?;
    let cache_dir = match args.cache_dir.as_deref() {
        Some("off") => None,
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => default_cache_dir(&env),
    };
    let deployment = match &args.manifest {
        Some(path) => crate::manifest::load(path)?,
        None => crate::manifest::Deployment::default(),
    };
    Ok(ProvisionOptions {
        home,
        policy: args
            .policy
            .clone()
            .or(deployment.policy_file)
            .map(PolicyChoice::File)
            .unwrap_or(PolicyChoice::Embedded),
        pinned_sha256: deployment.sha256,
        precompiled: deployment.precompiled,
        manifest: args.manifest.clone(),
        dry_run,
        http: http_settings(args.timeout, &env),
        durability: crate::sandbox::Durability::of_home(&env),
        env,
        cache_dir,
        limits: deployment.limits,
        file_limits: deployment.file_limits,
        file_grants: deployment.file_grants.unwrap_or_else(provision::default_file_grants),
        operation_grants: deployment.operation_grants.unwrap_or_else(provision::default_operation_grants),
        echo_level: Some(if args.verbose { LogLevel::Debug } else { LogLevel::Warn }),
        trigger,
        only_if_due: trigger.is_none(),
        replace_refused: None,
        defer_revocations: false,
    })
}

/// A local time for people, UTC, to the second.
pub fn when(epoch_ms: i64) -> String {
    let secs = epoch_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let (h, m, s) = (secs.rem_euclid(86_400) / 3600, secs.rem_euclid(3600) / 60, secs.rem_euclid(60));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

/// Resolves with the signal's name when SIGTERM or SIGINT arrives. Listening starts at the
/// first poll; until then the default action (exit) applies, which is safe while nothing is
/// minted.
pub async fn stop_signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM".to_string(),
        _ = int.recv() => "SIGINT".to_string(),
    }
}

/// A single-threaded runtime: devbox-auth does one thing at a time.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("cannot start the async runtime: {e}")))
}

/// Print a failure as the one error line, and turn it into the exit code.
pub fn fail(failure: &Failure) -> ExitCode {
    output::err(&format!("devbox-auth: error: {}", failure.message()));
    ExitCode::from(failure.exit_code())
}
