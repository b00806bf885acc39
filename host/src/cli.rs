//! The command line. Every failure ends as one line on stderr and a documented exit code:
//! 0 ok, 1 other, 2 usage/configuration, 3 auth/permission, 4 network/transient, 5 policy
//! sandbox (limit or crash), 130/143 stopped by a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::databricks::config::Env;
use crate::databricks::http::HttpSettings;
use crate::effects::LogLevel;
use crate::failure::Failure;
use crate::output::{self, policy_text};
use crate::provision::{self, Outcome, PolicyChoice, ProvisionOptions};
use crate::runtime::Trigger;
use crate::runtime::cache::PolicySource;

#[derive(Parser, Debug)]
#[command(
    name = "devbox-auth",
    version = crate::VERSION,
    about = "Give a Databricks App's coding assistants a short-lived Databricks credential, and keep it fresh."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sign in, provide a credential through the policy, and write the config files.
    Provision(ProvisionArgs),
    /// Keep the credential fresh while the app runs: rotate before expiry, revoke what was
    /// replaced. With `-- CMD...`, run the app as a child and stop with it.
    Watch(WatchArgs),
    /// Print a currently valid token (rotating first if it is due): a token helper for Claude
    /// Code's apiKeyHelper and Codex's provider auth command.
    Token(RunArgs),
    /// Show the credential in use, the files under management and the last rotation; exit
    /// non-zero when the setup is unhealthy.
    Status(StatusArgs),
    /// Test, inspect and precompile policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Internal (run by `watch`): carry out the revocations that are due.
    #[command(hide = true)]
    RevokeDue {
        #[command(flatten)]
        run: RunArgs,
        /// Revoke the served token too (`watch` stopping with revoke-on-exit).
        #[arg(long)]
        serve: bool,
    },
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
    /// Compile a policy to machine code for this build's engine, to ship next to the manifest
    /// (`[policy] precompiled`), so app starts only deserialize it.
    Compile {
        policy: PathBuf,
        /// Where to write the artifact.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

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

#[derive(clap::Args, Debug)]
struct ProvisionArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Run the policy against a simulated workspace; send nothing, write nothing, print the plan.
    #[arg(long)]
    dry_run: bool,
    /// Internal (used by `watch`): run only when a rotation or revocation is due, as a rotation.
    #[arg(long, hide = true)]
    if_due: bool,
}

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A shell command run after each rotation (e.g. to restart a reader that caches the
    /// token); its exit status is logged.
    #[arg(long, value_name = "CMD")]
    pub on_rotate: Option<String>,
    /// The app to run as a child (`devbox-auth watch -- python app.py`): started after the
    /// first provision, sent SIGTERM/SIGINT when watch gets them; watch exits with it.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Home directory the config files go to.
    #[arg(long, env = "HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Also ask the workspace whether the token still works.
    #[arg(long)]
    pub check: bool,
    /// Machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Total seconds for the workspace check.
    #[arg(long, env = "DEVBOX_AUTH_TIMEOUT_SECONDS", value_name = "SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
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
    let env = env_snapshot();
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
        env,
        cache_dir,
        limits: deployment.limits,
        file_limits: deployment.file_limits,
        file_grants: deployment.file_grants.unwrap_or_else(provision::default_file_grants),
        operation_grants: deployment.operation_grants.unwrap_or_else(provision::default_operation_grants),
        echo_level: Some(if args.verbose { LogLevel::Debug } else { LogLevel::Warn }),
        trigger,
        only_if_due: trigger.is_none(),
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

fn print_outcome(outcome: &Outcome, dry_run: bool) {
    if dry_run {
        output::out("devbox-auth provision --dry-run: nothing was sent and no config file was written.");
        output::out(&format!(
            "policy:    {} (devbox:auth@{}), sha256 {}, {} in {:.1} ms",
            outcome.policy,
            outcome.contract,
            &outcome.policy_sha256[..12],
            match outcome.source {
                PolicySource::Precompiled => "precompiled, loaded",
                PolicySource::Cache => "from the compile cache, loaded",
                PolicySource::Compiled => "compiled",
            },
            outcome.load_time.as_secs_f64() * 1000.0
        ));
        output::out(&format!("workspace: {}", outcome.workspace));
        output::out(&format!("auth:      {}", outcome.auth));
        if let Some(plan) = &outcome.plan {
            output::out(&format!("credential: {} — {}", plan.kind, policy_text(&plan.why)));
        }
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
    if outcome.skipped {
        output::out("devbox-auth: nothing was due (another devbox-auth process had just rotated)");
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
    if let Some(plan) = &outcome.plan {
        output::out(&format!(
            "devbox-auth: serving {} {}until {}; next rotation at {}",
            plan.kind,
            if plan.token_id.is_empty() { String::new() } else { format!("token {} ", plan.token_id) },
            when(plan.expiry_ms),
            when(plan.refresh_at_ms)
        ));
    }
    for line in &outcome.revoked {
        output::out(&format!("devbox-auth: {line}"));
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

fn provision_command(args: ProvisionArgs) -> ExitCode {
    let trigger = if args.if_due { None } else { Some(Trigger::Start) };
    let result = options(&args.run, trigger, args.dry_run)
        .and_then(|opts| runtime()?.block_on(provision::provision(opts, stop_signal())));
    match result {
        Ok(outcome) => {
            if args.run.verbose && !args.dry_run {
                output::err(&format!(
                    "devbox-auth: policy {} ({}) {} in {:.1} ms",
                    outcome.policy,
                    &outcome.policy_sha256[..12],
                    outcome.source,
                    outcome.load_time.as_secs_f64() * 1000.0
                ));
            }
            print_outcome(&outcome, args.dry_run);
            ExitCode::SUCCESS
        }
        Err(failure) => fail(&failure),
    }
}

/// `--version -v`: the version, and what this build embeds.
fn verbose_version() -> ExitCode {
    use crate::runtime::{DEFAULT_POLICY_WASM, TARGET, bindings, cache::sha256_hex, precompiled};
    output::out(&format!("devbox-auth {}", crate::VERSION));
    output::out(&format!("target:          {TARGET} (policies compiled for its baseline CPU)"));
    output::out(&format!(
        "contract:        {}@{} (also runs @{})",
        bindings::WIT_PACKAGE,
        bindings::WIT_VERSION,
        bindings::FROZEN_VERSIONS.join(", @")
    ));
    output::out(&format!("default policy:  sha256 {}", sha256_hex(DEFAULT_POLICY_WASM)));
    output::out(&format!(
        "precompiled:     sha256 {} ({} bytes)",
        sha256_hex(precompiled::DEFAULT_POLICY_CWASM),
        precompiled::DEFAULT_POLICY_CWASM.len()
    ));
    ExitCode::SUCCESS
}

/// clap's error as the one line every failure is: its first line, the variable a bad value
/// came from (clap names only the flag), and where to look.
fn usage_error(error: &clap::Error, env: &Env) -> String {
    use clap::CommandFactory;
    fn flags_with_env(command: &clap::Command, out: &mut Vec<(String, String)>) {
        for arg in command.get_arguments() {
            if let (Some(long), Some(var)) = (arg.get_long(), arg.get_env()) {
                out.push((format!("'--{long}"), var.to_string_lossy().into_owned()));
            }
        }
        command.get_subcommands().for_each(|sub| flags_with_env(sub, out));
    }
    // The (sub)command whose --help helps: the subcommand names given, in order.
    let mut command = vec!["devbox-auth".to_string()];
    let mut current = Cli::command();
    for arg in std::env::args().skip(1) {
        match current.find_subcommand(&arg).cloned() {
            Some(sub) => {
                command.push(arg);
                current = sub;
            }
            None if arg.starts_with('-') => continue,
            None => break,
        }
    }
    let command = command.join(" ");
    if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let subcommands: Vec<&str> =
            current.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name()).collect();
        return format!(
            "devbox-auth: error: `{command}` needs a subcommand: {}; see `{command} --help`",
            subcommands.join(", ")
        );
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let mut line = format!("devbox-auth: error: {}", first.trim_start_matches("error: "));
    let mut flags = Vec::new();
    flags_with_env(&Cli::command(), &mut flags);
    // Only when the flag was not given: then the value came from the variable.
    let given = |flag: &str| std::env::args().any(|a| a == flag[1..] || a.starts_with(&format!("{}=", &flag[1..])));
    if let Some((_, var)) =
        flags.iter().find(|(flag, var)| first.contains(flag.as_str()) && env.contains_key(var) && !given(flag))
    {
        line.push_str(&format!(" (the value comes from the environment variable {var})"));
    }
    // "the following required arguments were not provided:" lists them on the next lines.
    if first.ends_with(':') {
        let listed: Vec<&str> = rendered.lines().skip(1).map(str::trim).take_while(|l| !l.is_empty()).collect();
        line.push(' ');
        line.push_str(&listed.join(", "));
    }

    if let Some(tip) = rendered.lines().find_map(|l| l.trim().strip_prefix("tip: ")) {
        line.push_str(&format!("; {tip}"));
    } else if first.contains("unexpected argument") && rendered.contains("[-- <") {
        line.push_str("; the app's command goes after `--`, e.g. `devbox-auth watch -- python app.py`");
    }
    line.push_str(&format!("; see `{command} --help`"));
    line
}

pub fn main() -> ExitCode {
    install_panic_hook();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let asks = |names: &[&str]| args.iter().any(|a| names.contains(&a.as_str()));
    if asks(&["--version", "-V"]) && asks(&["-v", "--verbose"]) {
        return verbose_version();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            output::err(&usage_error(&e, &env_snapshot()));
            return ExitCode::from(2);
        }
        Err(e) => {
            // --help and --version: clap's own text on stdout.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Command::Provision(args) => provision_command(args),
        Command::Watch(args) => commands::watch::watch(args),
        Command::Token(args) => commands::token::token(&args),
        Command::Status(args) => commands::status::status(&args),
        Command::RevokeDue { run, serve } => commands::revoke::revoke_due(&run, serve),
        Command::Policy(PolicyCommand::Test { policy, cases, json }) => commands::policy::test(&policy, &cases, json),
        Command::Policy(PolicyCommand::Inspect { policy }) => commands::policy::inspect(&policy),
        Command::Policy(PolicyCommand::Compile { policy, output }) => commands::policy::compile(&policy, &output),
    }
}
