//! Names the target combinations the code branches on, once, so the sources
//! say `cfg(fdpass_abstract_names)` rather than repeating lists of
//! `target_os`; and links the binary so that it starts fast, which counts
//! for a tool whose every command is a process of its own.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let linux_kernel = matches!(os.as_str(), "linux" | "android");

    // Unix sockets can have a name in Linux's abstract namespace (`@name`).
    declare("fdpass_abstract_names", linux_kernel);

    // The unwinder linked in (libgcc_eh.a, as `-static-libgcc` does)
    // rather than loaded from libgcc_s.so: one shared library fewer for
    // the dynamic loader to find, map and relocate before `main`, and the
    // largest part of what a dynamic binary's start cost over a static
    // one's (see `cargo bench -p fdpass --bench holder`). Panics unwind as
    // before. A static build (crt-static) links it so already; where the
    // C compiler has no libgcc_eh.a (a clang-only system), libgcc_s stays.
    let env_ = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if os == "linux" && env_ == "gnu" && !features.split(',').any(|f| f == "crt-static") {
        if let Some(archive) = gcc_eh() {
            let dir = archive.parent().expect("an absolute path has a parent");
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static=gcc_eh");
        }
    }

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
}

/// Where the C compiler that links the binary (rustc's default `cc`, or
/// the linker configured for the target) finds `libgcc_eh.a`, if it does.
fn gcc_eh() -> Option<PathBuf> {
    let linker = env::var_os("RUSTC_LINKER").unwrap_or_else(|| "cc".into());
    let output = Command::new(linker)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    // The compiler echoes the bare name when it has no such file.
    let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    (output.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}

fn declare(name: &str, on: bool) {
    println!("cargo:rustc-check-cfg=cfg({name})");
    if on {
        println!("cargo:rustc-cfg={name}");
    }
}
