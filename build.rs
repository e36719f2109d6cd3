//! Release links of the binary on Linux:
//! - packed relative relocations (`DT_RELR`, glibc 2.36+, which the distroless Debian 12 image
//!   has): the ~21,000 relative relocations of a position-independent executable take a few KB
//!   instead of ~500 KB that are read, and stay resident, at every start;
//! - `docker/hot-text.ld` (written by `bench/hot_text.py`), which puts the code a running broker
//!   executes at the front of the text, so that the kernel maps those pages and not the whole
//!   text: about 1.5 MiB less RSS (BENCHMARKS.md). Not in a build with debug info (the
//!   `profiling` profile): valgrind reads no line tables for code outside `.text`, and such a
//!   build is for profilers, whose counts the layout does not change.

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=docker/hot-text.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // PROFILE is "release" for the release profile and those that inherit it (profiling);
    // DEBUG is "true" when the profile has debug info (profiling).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/hot-text.ld");
    if std::env::var("PROFILE").as_deref() == Ok("release")
        && std::env::var("DEBUG").as_deref() == Ok("false")
        && script.exists()
    {
        println!("cargo::rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}
