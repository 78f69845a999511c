//! Names the target combinations the code branches on, once, so the sources
//! say `cfg(fdpass_abstract_names)` rather than repeating lists of
//! `target_os`.

use std::env;

fn main() {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let linux_kernel = matches!(os.as_str(), "linux" | "android");

    // Unix sockets can have a name in Linux's abstract namespace (`@name`).
    declare("fdpass_abstract_names", linux_kernel);

    println!("cargo:rerun-if-changed=build.rs");
}

fn declare(name: &str, on: bool) {
    println!("cargo:rustc-check-cfg=cfg({name})");
    if on {
        println!("cargo:rustc-cfg={name}");
    }
}
