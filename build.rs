//! Names the target combinations the code branches on, once, so the sources
//! say `cfg(fdpass_cmsg_cloexec)` rather than repeating lists of `target_os`.

use std::env;

fn main() {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let apple = matches!(
        os.as_str(),
        "macos" | "ios" | "tvos" | "watchos" | "visionos"
    );
    let solarish = matches!(os.as_str(), "illumos" | "solaris");
    let linux_kernel = matches!(os.as_str(), "linux" | "android");

    declare("fdpass_apple", apple);
    declare("fdpass_solarish", solarish);
    declare("fdpass_linux_kernel", linux_kernel);
    // rustix has the pidfd calls (`pidfd_open`, `pidfd_getfd`,
    // `pidfd_send_signal`); on Android they are raw system calls.
    declare("fdpass_rustix_pidfd", os == "linux");
    // `recvmsg` can mark received fds close-on-exec atomically.
    declare("fdpass_cmsg_cloexec", !apple && !solarish);
    // `send` suppresses SIGPIPE per call with `MSG_NOSIGNAL`; elsewhere
    // (Apple) the socket option `SO_NOSIGPIPE` is the mechanism.
    declare("fdpass_msg_nosignal", !apple);
    // `sendmmsg` sends a burst of messages in one call (rustix has it for
    // Linux).
    declare("fdpass_sendmmsg", os == "linux");
    // `recvmmsg` receives a burst of messages in one call.
    declare(
        "fdpass_recvmmsg",
        linux_kernel || matches!(os.as_str(), "freebsd" | "netbsd" | "openbsd"),
    );

    // `close_range` can mark every fd above a number close-on-exec in one
    // call (`CLOSE_RANGE_CLOEXEC`, Linux 5.11; the libc crate names it for
    // Linux, not Android).
    declare("fdpass_close_range_cloexec", os == "linux");

    // `SO_PASSRIGHTS` (Linux 6.16) has the generic number 83 here.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    declare(
        "fdpass_passrights",
        linux_kernel
            && matches!(
                arch.as_str(),
                "x86" | "x86_64" | "arm" | "aarch64" | "riscv64" | "loongarch64"
            ),
    );

    // cargo-fuzz sets `fuzzing`, which exposes the pure rules to the fuzz
    // targets (`crate::fuzzing`).
    println!("cargo:rustc-check-cfg=cfg(fuzzing)");
    println!("cargo:rerun-if-changed=build.rs");
}

fn declare(name: &str, on: bool) {
    println!("cargo:rustc-check-cfg=cfg({name})");
    if on {
        println!("cargo:rustc-cfg={name}");
    }
}
