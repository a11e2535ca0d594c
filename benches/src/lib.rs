//! Helpers shared by the benchmark tools in `src/bin/` (the delay proxy, the idle-agent
//! simulator); the criterion benches live in `benches/`.
#![forbid(unsafe_code)]

/// The value after `--name` on the command line, if any (the tools take a few flags only).
pub fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}
