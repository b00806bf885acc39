//! The command line. Every failure ends as one line on stderr and a documented exit code:
//! 0 ok, 1 other, 2 usage/configuration, 3 auth/permission, 4 network/transient, 5 policy
//! sandbox (limit or crash), 130/143 stopped by a signal.
//!
//! This module only parses and dispatches; each command lives in `crate::commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::common::{RunArgs, env_snapshot};
use crate::commands::provision::ProvisionArgs;
use crate::commands::status::StatusArgs;
use crate::commands::token::TokenArgs;
use crate::commands::watch::WatchArgs;
use crate::commands::{self, version};
use crate::databricks::config::Env;
use crate::output;

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
    Token(TokenArgs),
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

/// Panics are bugs; their messages could still carry data, so print only where it happened.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        output::err(&format!(
            "devbox-auth: internal error{at}; please report it (details withheld: they may contain credentials)"
        ));
    }));
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
        return version::verbose_version();
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
        Command::Provision(args) => commands::provision::provision_command(args),
        Command::Watch(args) => commands::watch::watch(args),
        Command::Token(args) => commands::token::token(&args),
        Command::Status(args) => commands::status::status(&args),
        Command::RevokeDue { run, serve } => commands::revoke::revoke_due(&run, serve),
        Command::Policy(PolicyCommand::Test { policy, cases, json }) => commands::policy::test(&policy, &cases, json),
        Command::Policy(PolicyCommand::Inspect { policy }) => commands::policy::inspect(&policy),
        Command::Policy(PolicyCommand::Compile { policy, output }) => commands::policy::compile(&policy, &output),
    }
}
