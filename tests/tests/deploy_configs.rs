//! Every example config in `deploy/` parses and validates with the real config types, and the
//! agent's validation names the bad field.

use std::path::{Path, PathBuf};

use g2c_agent::config::AgentConfig;
use g2c_gateway::config::GatewayConfig;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_example_config_parses_and_validates() {
    let mut files = Vec::new();
    toml_files(&deploy_dir(), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("gateway") {
            let cfg = GatewayConfig::from_toml(&text, &f).unwrap();
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("agent") {
            let cfg = AgentConfig::from_toml(&text, &f).unwrap();
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            panic!("unclassified example config {name}: teach this test about it");
        }
    }
}

#[test]
fn production_gateway_example_uses_privileged_ports_and_tls() {
    let f = deploy_dir().join("gateway.toml");
    let cfg = GatewayConfig::from_toml(&std::fs::read_to_string(&f).unwrap(), &f).unwrap();
    assert_eq!(cfg.ssh.listen.port(), 22);
    assert_eq!(cfg.https.as_ref().unwrap().listen.port(), 443);
    assert!(cfg.backchannel.cert.is_some());
}

#[test]
fn unknown_keys_and_bad_values_name_the_field() {
    let f = deploy_dir().join("agent.toml");
    let text = std::fs::read_to_string(&f).unwrap();
    let err = AgentConfig::from_toml(&format!("{text}\nsurprise = 1\n"), &f).unwrap_err();
    assert!(err.to_string().contains("surprise"), "{err}");
    let bad = text.replace("local = \"127.0.0.1:8080\"", "local = \"127.0.0.1:99999\"");
    let err = AgentConfig::from_toml(&bad, &f)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("services[0].local"), "{err}");
    let gw = deploy_dir().join("gateway.toml");
    let text = std::fs::read_to_string(&gw).unwrap();
    let err = GatewayConfig::from_toml(&text.replace("[limits]", "[limits]\nbogus = 1"), &gw)
        .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = GatewayConfig::from_toml(
        &text.replace("port_range_start = 11000", "port_range_start = 12000"),
        &gw,
    )
    .unwrap()
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("limits.port_range_start"), "{err}");
}

#[test]
fn the_cluster_haproxy_example_is_valid_haproxy() {
    let f = deploy_dir().join("cluster/haproxy.cfg");
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("haproxy not found: install haproxy (scripts/test.sh does)");
    let out = std::process::Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
