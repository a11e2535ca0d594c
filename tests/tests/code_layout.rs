//! The symbol order behind the shipped binaries' code layout (`scripts/layout.py`, used by
//! `scripts/dist.sh`): from a callgrind profile it must list every function of the binary the
//! run executed, by self cost, including functions first named as a callee, and nothing else:
//! not a call's inclusive cost counted as the caller's own, not names the binary lacks.

use std::path::Path;
use std::process::Command;

use g2c_tests::procs::bin;

/// Three function symbols of `binary` (mangled, as the linker knows them).
fn some_functions(binary: &Path) -> Vec<String> {
    let out = Command::new("nm").arg(binary).output().expect("nm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && matches!(f[1], "t" | "T")).then(|| f[2].to_owned())
        })
        .filter(|name| name.starts_with("_ZN") || name.starts_with("_R"))
        .take(3)
        .collect()
}

#[test]
fn the_order_lists_the_functions_run_hottest_first_and_only_the_binarys() {
    let binary = bin("g2c-agent");
    let f = some_functions(&binary);
    assert_eq!(f.len(), 3, "the agent has function symbols");
    let (caller, callee, only_called) = (&f[0], &f[1], &f[2]);
    // `caller` costs 5 itself and calls `callee` for an inclusive 1,000; `callee` costs 10
    // itself; `only_called` is named only as a callee (cfn=); `memcpy` is not the binary's.
    let profile = format!(
        "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\
         fl=(1) a.rs\nfn=(1) {caller}\n0 5\n\
         cfl=(1)\ncfn=(2) {callee}\ncalls=3 0\n0 1000\n\
         cfn=(3) {only_called}\ncalls=1 0\n0 7\n\
         fn=(2)\n+1 10\n\
         fl=(2) libc.c\nfn=(4) memcpy\n0 99999\n\
         garbage line\nfn=(5\n\ntotals: 100026\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let (cg, order) = (dir.path().join("x.callgrind"), dir.path().join("x.order"));
    std::fs::write(&cg, profile).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/layout.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&cg, &binary, &order])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = std::fs::read_to_string(&order).unwrap();
    let listed: Vec<&str> = listed.lines().collect();
    assert_eq!(
        listed,
        [callee.as_str(), caller.as_str(), only_called.as_str()]
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("3 functions executed"), "{said}");
}
