//! The command line. Every failure ends as one line on stderr and a documented exit code:
//! 0 ok, 1 other, 2 usage/configuration, 3 auth/permission, 4 network/transient, 5 policy
//! sandbox (limit or crash).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::databricks::http::HttpSettings;
use crate::effects::LogLevel;
use crate::failure::Failure;
use crate::output::{self, policy_text};
use crate::provision::{self, Outcome, PolicyChoice, ProvisionOptions};

#[derive(Parser, Debug)]
#[command(
    name = "devbox-auth",
    version,
    about = "Mint a short-lived Databricks token and write the coding assistants' configs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sign in, mint a token through the policy, and write the config files.
    Provision(ProvisionArgs),
    /// Test and inspect policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Run case files against a policy in the real sandbox, with test doubles behind every
    /// import. Exit 0: all passed; 2: a case failed; 1: the tool could not run.
    Test {
        /// The policy component (.wasm).
        policy: PathBuf,
        /// Case files (.json), or folders of them.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
        /// Machine-readable report on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print a policy's world, WIT version, imports and exports, and whether this host can run
    /// it (exit 2 when it cannot).
    Inspect { policy: PathBuf },
}

#[derive(clap::Args, Debug)]
struct ProvisionArgs {
    /// Home directory the config files go to.
    #[arg(long, env = "HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// A policy component (.wasm) to run instead of the embedded default.
    #[arg(long, env = "DEVBOX_AUTH_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The deployment's manifest: policy file and SHA-256 pin, grants, limits.
    #[arg(long, env = "DEVBOX_AUTH_MANIFEST", value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Run the policy against a simulated workspace; send nothing, write nothing, print the plan.
    #[arg(long)]
    dry_run: bool,
    /// Total seconds for each workspace call, retries included.
    #[arg(long, env = "DEVBOX_AUTH_TIMEOUT_SECONDS", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Where compiled policies are cached ("off" disables). Default: $XDG_CACHE_HOME/devbox-auth or ~/.cache/devbox-auth.
    #[arg(long, env = "DEVBOX_AUTH_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<String>,
    /// Print the policy's info and debug messages too.
    #[arg(long, short)]
    verbose: bool,
}

fn env_snapshot() -> crate::databricks::config::Env {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

fn default_cache_dir(env: &crate::databricks::config::Env) -> Option<PathBuf> {
    let non_empty = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty("XDG_CACHE_HOME")
        .map(|d| d.join("devbox-auth"))
        .or_else(|| non_empty("HOME").map(|h| h.join(".cache/devbox-auth")))
}

fn options(args: ProvisionArgs) -> Result<ProvisionOptions, Failure> {
    let env = env_snapshot();
    let home = args
        .home
        .filter(|h| !h.as_os_str().is_empty())
        .ok_or_else(|| Failure::Usage("no home directory: set HOME or pass --home DIR".into()))?;
    let cache_dir = match args.cache_dir.as_deref() {
        Some("off") => None,
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => default_cache_dir(&env),
    };
    let deployment = match &args.manifest {
        Some(path) => crate::manifest::load(path).map_err(Failure::Usage)?,
        None => crate::manifest::Deployment::default(),
    };
    let budget = Duration::from_secs(args.timeout);
    let http = HttpSettings {
        retry_budget: budget,
        request_timeout: budget.min(Duration::from_secs(30)),
        connect_timeout: budget.min(Duration::from_secs(5)),
        extra_ca_file: env.get("SSL_CERT_FILE").filter(|f| !f.is_empty()).map(PathBuf::from),
        ..HttpSettings::default()
    };
    Ok(ProvisionOptions {
        home,
        policy: args.policy.or(deployment.policy_file).map(PolicyChoice::File).unwrap_or(PolicyChoice::Embedded),
        pinned_sha256: deployment.sha256,
        manifest: args.manifest,
        dry_run: args.dry_run,
        env,
        http,
        cache_dir,
        limits: deployment.limits,
        file_limits: deployment.file_limits,
        file_grants: deployment.file_grants.unwrap_or_else(provision::default_file_grants),
        operation_grants: deployment.operation_grants.unwrap_or_else(provision::default_operation_grants),
        echo_level: Some(if args.verbose { LogLevel::Debug } else { LogLevel::Warn }),
    })
}

fn print_outcome(outcome: &Outcome, dry_run: bool) {
    if dry_run {
        output::out("devbox-auth provision --dry-run: nothing was sent and no config file was written.");
        output::out(&format!(
            "policy:    {}, sha256 {}, loaded in {} ms (cache: {:?})",
            outcome.policy,
            &outcome.policy_sha256[..12],
            outcome.load_time.as_millis(),
            outcome.cache
        ));
        output::out(&format!("workspace: {}", outcome.workspace));
        output::out(&format!("auth:      {}", outcome.auth));
        for note in &outcome.notes {
            output::out(&format!("note:      {note}"));
        }
        output::out("would send:");
        for request in &outcome.requests {
            output::out(&format!("  {request}"));
        }
        output::out("would write:");
        for file in &outcome.files {
            output::out(&format!("  ~/{} (mode {:04o}, {} bytes)", file.path, file.mode, file.bytes));
            for line in file.masked_contents.as_deref().unwrap_or_default().lines() {
                output::out(&format!("    | {line}"));
            }
        }
        return;
    }
    for token in &outcome.minted {
        let lifetime = token.expiry_time_ms.saturating_sub(token.creation_time_ms) / 1000;
        output::out(&format!(
            "devbox-auth: minted token {} {}, valid for {lifetime} s",
            token.token_id,
            policy_text(&token.comment)
        ));
    }
    let paths: Vec<String> = outcome.files.iter().map(|f| format!("~/{}", f.path)).collect();
    output::out(&format!(
        "devbox-auth: wrote {}",
        if paths.is_empty() { "nothing".to_string() } else { paths.join(", ") }
    ));
}

/// Panics are bugs; their messages could still carry data, so print only where it happened.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        output::err(&format!(
            "devbox-auth: internal error{at}; please report it (details withheld: they may contain credentials)"
        ));
    }));
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

pub fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let args = match cli.command {
        Command::Provision(args) => args,
        Command::Policy(PolicyCommand::Test { policy, cases, json }) => {
            return crate::policy_commands::test(&policy, &cases, json);
        }
        Command::Policy(PolicyCommand::Inspect { policy }) => return crate::policy_commands::inspect(&policy),
    };
    let dry_run = args.dry_run;
    let result = options(args).and_then(|opts| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Other(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(provision::provision(opts, stop_signal()))
    });
    match result {
        Ok(outcome) => {
            print_outcome(&outcome, dry_run);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            output::err(&format!("devbox-auth: error: {}", failure.message()));
            ExitCode::from(failure.exit_code())
        }
    }
}
