//! Runs the embedded policy's machine code where the binary already holds it.
//!
//! `Component::deserialize` copies an artifact into memory of its own before making it
//! executable: for the embedded default that is 2.3 MB read from the binary and 2.3 MB of fresh
//! pages, both resident at once, on every start. Instead the artifact sits page-aligned in the
//! binary's read-only data, and wasmtime is handed it in place (`deserialize_raw`) with this
//! code memory, which makes its `.text` executable with `mprotect`. Only the pages a run touches
//! are read, they stay shared with the page cache, and nothing is copied.
//!
//! Only the engine that loads the embedded policy has this code memory, and only on x86-64
//! Linux (what ships), where making code executable needs no cache maintenance. There it also
//! serves a copied artifact (a later load in the same process), which wasmtime has already made
//! read-only: `mprotect` to R|X, as wasmtime does itself on x86-64.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::CustomCodeMemory;

/// A byte string aligned to a 4 KiB page. The embedded artifact's `.text` starts at a page
/// boundary inside it (wasmtime aligns it so), so with this it starts at one in memory too.
#[repr(C, align(4096))]
pub struct PageAligned<Bytes: ?Sized>(pub Bytes);

/// The page protections behind [`CustomCodeMemory`], aware of which range is the binary's.
pub struct CodeInPlace {
    page_size: usize,
    /// The embedded artifact: left as it is when unpublished (the binary's read-only data,
    /// which nothing writes to), where wasmtime's own memory goes back to read-write.
    embedded: Range<usize>,
}

impl CodeInPlace {
    /// Where running code in place is done: x86-64 needs no instruction-cache maintenance
    /// after `mprotect`, and has no branch-target protection for wasmtime to set.
    pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

    pub fn new(embedded: &'static [u8]) -> Self {
        let start = embedded.as_ptr() as usize;
        Self { page_size: page_size(), embedded: start..start + embedded.len() }
    }

    /// Whether `artifact` may run in place now. The first load in a process that asks gets
    /// it, and keeps it: every later one is copied, as wasmtime does by default. Two code
    /// memories over the same bytes would register the same unwind tables twice, and the C
    /// runtime's unwinder (libgcc 13 and later) aborts when the second is deregistered. A run loads its
    /// policy once; only tests and embedders load it again. Also not when the artifact does not
    /// start on a page (pages larger than [`PageAligned`]'s 4 KiB); the claim is then kept.
    pub fn claim(artifact: &[u8]) -> bool {
        static CLAIMED: AtomicBool = AtomicBool::new(false);
        (artifact.as_ptr() as usize).is_multiple_of(page_size()) && !CLAIMED.swap(true, Ordering::SeqCst)
    }

    fn protect(&self, ptr: *const u8, len: usize, protection: libc::c_int) -> wasmtime::Result<()> {
        let len = len.div_ceil(self.page_size) * self.page_size;
        // SAFETY: wasmtime passes the page-aligned `.text` of a code memory it owns or was
        // lent (the embedded artifact, which lives for the whole process); changing its
        // protection affects no other data.
        let status = unsafe { libc::mprotect(ptr as *mut libc::c_void, len, protection) };
        if status != 0 {
            let why = std::io::Error::last_os_error();
            return Err(wasmtime::format_err!("cannot change the protection of the policy's machine code: {why}"));
        }
        Ok(())
    }
}

impl CustomCodeMemory for CodeInPlace {
    fn required_alignment(&self) -> usize {
        self.page_size
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        self.protect(ptr, len, libc::PROT_READ | libc::PROT_EXEC)
    }

    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        // Nothing to undo for the binary's bytes: they stay readable (and executable, which is
        // what they are for), and a failed protection change here would be a panic in
        // wasmtime's drop, also after a publish that failed.
        if self.embedded.contains(&(ptr as usize)) {
            return Ok(());
        }
        self.protect(ptr, len, libc::PROT_READ | libc::PROT_WRITE)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    }
}
