//! Precompiled policies, so a start only deserializes machine code instead of compiling: the
//! embedded default (compiled by `build.rs` with Cranelift and the shared engine
//! configuration) and a deployment's own policy compiled (by Winch) with `devbox-auth policy
//! compile`.
//!
//! A `policy compile` artifact is `DBXPOLC1`, the SHA-256 of the component it was compiled
//! from, then wasmtime's serialized component. The deployment manifest pins both the component
//! and the artifact, so an artifact that does not belong to the pinned component, or was
//! changed, is refused before anything is deserialized.

use sha2::{Digest, Sha256};

use super::code_in_place::PageAligned;

/// The embedded default policy as machine code, compiled when devbox-auth was built. Page-aligned,
/// so that its code runs where it lies (see [`super::code_in_place`]).
pub static DEFAULT_POLICY_CWASM: &[u8] = &EMBEDDED.0;

static EMBEDDED: &PageAligned<[u8]> = &PageAligned(*include_bytes!(concat!(env!("OUT_DIR"), "/default_policy.cwasm")));

/// The embedded component's SHA-256, computed by the build (a start need not read the
/// component at all).
pub const DEFAULT_POLICY_SHA256: &str = env!("DEVBOX_AUTH_DEFAULT_POLICY_SHA256");

const MAGIC: &[u8; 8] = b"DBXPOLC1";

/// An artifact file for the component whose SHA-256 is `wasm_sha256`.
pub fn wrap(wasm: &[u8], compiled: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 32 + compiled.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(wasm));
    out.extend_from_slice(compiled);
    out
}

/// Why an artifact file does not belong to the policy beside it. Read as "precompiled policy
/// FILE {error}".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("is not a devbox-auth precompiled policy (made by `devbox-auth policy compile`)")]
    NotAnArtifact,
    #[error("is truncated")]
    Truncated,
    #[error("was compiled from another component than the policy file; run `devbox-auth policy compile` again")]
    OtherComponent,
}

/// The serialized component inside an artifact, if it was compiled from `wasm`.
pub fn unwrap<'a>(artifact: &'a [u8], wasm: &[u8]) -> Result<&'a [u8], ArtifactError> {
    let rest = artifact.strip_prefix(MAGIC.as_slice()).ok_or(ArtifactError::NotAnArtifact)?;
    let (source, compiled) = rest.split_at_checked(32).ok_or(ArtifactError::Truncated)?;
    if source != Sha256::digest(wasm).as_slice() {
        return Err(ArtifactError::OtherComponent);
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_belongs_to_one_component() {
        let artifact = wrap(b"component a", b"machine code");
        assert_eq!(unwrap(&artifact, b"component a").unwrap(), b"machine code");
        assert_eq!(unwrap(&artifact, b"component b"), Err(ArtifactError::OtherComponent));
        assert_eq!(unwrap(b"garbage", b"component a"), Err(ArtifactError::NotAnArtifact));
        assert_eq!(unwrap(&artifact[..20], b"component a"), Err(ArtifactError::Truncated));
    }
}
