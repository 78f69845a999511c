//! Names the target combinations the code branches on, once, so the sources
//! say `cfg(fdpass_abstract_names)` rather than repeating lists of
//! `target_os`.

use std::env;

fn main() {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let linux_kernel = matches!(os.as_str(), "linux" | "android");
    let solarish = matches!(os.as_str(), "illumos" | "solaris");

    // Unix sockets can have a name in Linux's abstract namespace (`@name`).
    declare("fdpass_abstract_names", linux_kernel);
    // The peer's uid comes from `SO_PEERCRED`.
    declare("fdpass_so_peercred", linux_kernel);
    // The peer's uid comes from `getpeerucred`; elsewhere, from `getpeereid`.
    declare("fdpass_getpeerucred", solarish);

    println!("cargo:rerun-if-changed=build.rs");
}

fn declare(name: &str, on: bool) {
    println!("cargo:rustc-check-cfg=cfg({name})");
    if on {
        println!("cargo:rustc-cfg={name}");
    }
}
