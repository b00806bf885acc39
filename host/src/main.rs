fn main() -> std::process::ExitCode {
    devbox_auth::cli::main()
}
