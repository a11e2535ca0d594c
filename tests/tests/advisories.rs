//! The offline advisory check: every package in the workspace's and the fuzz crate's
//! `Cargo.lock` against the RustSec advisory database snapshot (`../shared/advisory-db`, or
//! `G2C_ADVISORY_DB`). An advisory applies when the locked version is neither patched nor
//! unaffected (cargo's semver rules); withdrawn advisories are skipped. Any that applies fails
//! the check unless `advisories.toml` accepts its id with a reason.
//!
//! Written against the database's own format rather than by installing cargo-deny: that tool
//! takes longer to build on a fresh two-core CI machine than the whole check is worth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Deserialize)]
struct Lock {
    package: Vec<Locked>,
}

#[derive(Deserialize)]
struct Locked {
    name: String,
    version: String,
}

#[derive(Deserialize)]
struct Advisory {
    advisory: AdvisoryMeta,
    #[serde(default)]
    versions: Versions,
}

#[derive(Deserialize)]
struct AdvisoryMeta {
    id: String,
    package: String,
    #[serde(default)]
    informational: Option<String>,
    #[serde(default)]
    withdrawn: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
struct Versions {
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
}

#[derive(Deserialize)]
struct Accepted {
    accepted: Vec<AcceptedAdvisory>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptedAdvisory {
    id: String,
    reason: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn database() -> Option<PathBuf> {
    let db = std::env::var_os("G2C_ADVISORY_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/advisory-db"));
    db.join("crates").is_dir().then_some(db)
}

/// The TOML front matter of one advisory file.
fn front_matter(text: &str) -> Option<&str> {
    let start = text.find("```toml")? + "```toml".len();
    let end = text[start..].find("```")? + start;
    Some(&text[start..end])
}

fn matches_any(version: &semver::Version, reqs: &[String]) -> bool {
    reqs.iter().any(|r| {
        semver::VersionReq::parse(r)
            .unwrap_or_else(|e| panic!("unparsable version requirement {r:?}: {e}"))
            .matches(version)
    })
}

/// Every advisory that applies to a locked package: (id, package@version, kind).
fn applying(db: &Path, lockfile: &Path) -> Vec<(String, String, String)> {
    let lock: Lock = toml::from_str(&std::fs::read_to_string(lockfile).unwrap()).unwrap();
    let mut found = Vec::new();
    for p in &lock.package {
        let Ok(entries) = std::fs::read_dir(db.join("crates").join(&p.name)) else {
            continue;
        };
        let version = semver::Version::parse(&p.version).unwrap();
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let Some(front) = front_matter(&text) else {
                continue;
            };
            let a: Advisory =
                toml::from_str(front).unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            assert_eq!(a.advisory.package, p.name);
            if a.advisory.withdrawn.is_some()
                || matches_any(&version, &a.versions.patched)
                || matches_any(&version, &a.versions.unaffected)
            {
                continue;
            }
            let kind = a
                .advisory
                .informational
                .unwrap_or_else(|| "vulnerability".into());
            found.push((a.advisory.id, format!("{}@{}", p.name, p.version), kind));
        }
    }
    found
}

#[test]
fn no_advisory_applies_to_a_locked_package_unless_accepted_with_a_reason() {
    let Some(db) = database() else {
        eprintln!(
            "advisory database not found (../shared/advisory-db or G2C_ADVISORY_DB): check skipped"
        );
        return;
    };
    let accepted: Accepted =
        toml::from_str(&std::fs::read_to_string(repo().join("advisories.toml")).unwrap()).unwrap();
    let accepted: BTreeMap<String, String> = accepted
        .accepted
        .into_iter()
        .map(|a| (a.id, a.reason))
        .collect();
    let mut failures = Vec::new();
    for lock in ["Cargo.lock", "fuzz/Cargo.lock"] {
        for (id, package, kind) in applying(&db, &repo().join(lock)) {
            match accepted.get(&id) {
                Some(reason) => eprintln!("accepted {id} ({kind}) for {package}: {reason}"),
                None => failures.push(format!("{lock}: {id} ({kind}) applies to {package}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "advisories apply:\n{}",
        failures.join("\n")
    );
}

/// The checker itself finds what it should: a known advisory against an old version.
#[test]
fn the_checker_finds_an_advisory_for_a_vulnerable_version() {
    let Some(db) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("Cargo.lock");
    std::fs::write(
        &lock,
        "version = 4\n[[package]]\nname = \"hyper\"\nversion = \"0.9.3\"\n\n[[package]]\nname = \"tokio\"\nversion = \"1.48.0\"\n",
    )
    .unwrap();
    let found = applying(&db, &lock);
    assert!(
        found
            .iter()
            .any(|(id, p, _)| id == "RUSTSEC-2016-0002" && p == "hyper@0.9.3"),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|(_, p, _)| p.starts_with("tokio@")),
        "{found:?}"
    );
}
