//! Link-time code layout, the build script of `g2c-agent` and `g2c-gateway`. With
//! `G2C_LAYOUT_DIR` set (by `scripts/dist.sh`), the functions listed in
//! `$G2C_LAYOUT_DIR/<binary>.order` (those a training run executed, hottest first) are
//! placed together at the start of `.text`.
//!
//! Why: Linux maps a binary's code 64 KiB around each page an instruction is fetched from, and
//! every such page stays in the process's RSS. The code a tunnel runs (start-up, the handshake,
//! each request) is a small part of each binary, but spread over all of it, so most of the
//! binary was resident; packed together it is a fraction, and the hot path shares fewer cache
//! lines and TLB entries. Without the variable the link is the default one.

fn main() {
    println!("cargo:rerun-if-env-changed=G2C_LAYOUT_DIR");
    let Some(dir) = std::env::var_os("G2C_LAYOUT_DIR") else {
        return;
    };
    let bin = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME");
    // The directory, not the file: a file that does not exist yet would make cargo run this
    // script (and link again) on every build.
    println!(
        "cargo:rerun-if-changed={}",
        std::path::Path::new(&dir).display()
    );
    let order = std::path::Path::new(&dir).join(format!("{bin}.order"));
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names the training run saw that this build does not have are expected.
        println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
    }
}
