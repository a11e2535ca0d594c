//! The agent's local GUI in a real headless Chromium (Debian's `chromium` + `chromedriver`),
//! against the real `g2c-agent` binary connected to a gateway: log in, see the tunnel, move a
//! service to another port and watch traffic follow, be told off for a bad port with the file
//! untouched, follow the live log, reconnect. Each page is saved as a PNG under
//! `target/gui-screenshots/`.

use std::path::Path;
use std::time::Duration;

use g2c_agent::config::AgentConfig;
use g2c_tests::gui_stack::{saw, screenshots, GuiStack};
use g2c_tests::webdriver::Browser;
use http::Method;

/// A gateway, two HTTP apps, and the real agent binary serving `web` → app A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gui_in_a_real_browser_shows_status_edits_config_follows_logs_and_reconnects() {
    let st = GuiStack::start().await;
    let shots = screenshots();
    let browser = Browser::start(st.dir.path()).await;
    log_in_and_see_the_status(&st, &browser, &shots).await;
    let reconnects = move_web_to_app_b(&st, &browser, &shots).await;
    an_invalid_port_is_refused_and_the_file_kept(&st, &browser, &shots).await;
    the_log_view_follows_live(&st, &browser, &shots).await;
    reconnect_from_operations(&browser, &shots, reconnects).await;
    // No JavaScript errors (a 401 before login is the network's entry, not the script's).
    let errors = browser.script_errors().await;
    assert!(errors.is_empty(), "JavaScript errors: {errors:?}");
    browser.quit().await;
    for shot in [
        "login",
        "status",
        "config",
        "config-invalid",
        "logs",
        "operations",
    ] {
        let png = std::fs::read(shots.join(format!("{shot}.png"))).unwrap();
        assert!(
            png.len() > 1000 && png.starts_with(b"\x89PNG"),
            "{shot}.png"
        );
    }
}

/// How long the page has for each change.
const WAIT: Duration = Duration::from_secs(15);
/// The port field of the first service on the configuration page.
const PORT: &str = "#services-table tbody tr:first-child .svc-port";

/// Log in (a wrong secret first), then the status page shows the tunnel and its facts.
async fn log_in_and_see_the_status(st: &GuiStack, browser: &Browser, shots: &Path) {
    let wait = WAIT;
    let base = format!("http://{}/", st.api);
    // Log in.
    browser.goto(&base).await;
    browser.wait_for("#secret", wait).await;
    browser.screenshot(&shots.join("login.png")).await;
    browser.fill("#secret", "wrong").await;
    browser.click("#login").await;
    browser
        .wait_text("#login-error", "wrong secret", wait, |t| {
            t.contains("Wrong secret")
        })
        .await;
    browser.fill("#secret", &st.secret).await;
    browser.click("#login").await;

    // Status: connected, with the facts.
    browser
        .wait_text("#tunnel-state", "connected", wait, |t| t == "connected")
        .await;
    browser
        .wait_text("#st-registration", "the registration", wait, |t| t == st.id)
        .await;
    browser
        .wait_text("#st-services", "the web service", wait, |t| {
            t.contains("web") && t.contains(&st.app_a.addr.to_string())
        })
        .await;
    browser
        .wait_text("#st-rtt", "a round trip", wait, |t| t.ends_with("ms"))
        .await;
    browser.screenshot(&shots.join("status.png")).await;
}

/// Configuration: move `web` to app B's port; traffic follows without a reconnect. Returns the
/// reconnect count.
async fn move_web_to_app_b(st: &GuiStack, browser: &Browser, shots: &Path) -> u64 {
    let wait = WAIT;
    let port = PORT;
    // Configuration: move `web` to app B's port; traffic follows without a reconnect.
    let r = st.through_gateway("/bytes/11").await;
    assert_eq!(r.status, 200);
    assert!(saw(&st.app_a, "/bytes/11"));
    let reconnects = st.status().await["reconnects"].as_u64().unwrap();
    browser.click("#nav-config").await;
    browser.wait_for(port, wait).await;
    browser.screenshot(&shots.join("config.png")).await;
    browser.fill(port, &st.app_b.addr.port().to_string()).await;
    browser.click("#config-save").await;
    let msg = browser
        .wait_text("#config-message", "saved", wait, |t| t.starts_with("Saved"))
        .await;
    assert!(msg.contains("Applied live"), "{msg}");
    let saved = AgentConfig::load(&st.config).unwrap();
    assert!(saved.services[0].local == st.app_b.addr.to_string());
    assert_eq!(
        saved.services[0]
            .health
            .as_ref()
            .and_then(|h| h.path.as_deref()),
        Some("/bytes/2"),
        "the probe the form does not edit is kept"
    );
    let backup = std::fs::read_to_string(st.dir.path().join("agent.toml.bak")).unwrap();
    assert!(
        backup.contains(&st.app_a.addr.to_string()),
        "the backup holds the previous file"
    );
    let r = st.through_gateway("/bytes/12").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 12));
    assert!(
        saw(&st.app_b, "/bytes/12") && !saw(&st.app_a, "/bytes/12"),
        "traffic follows the new port"
    );
    assert_eq!(
        st.status().await["reconnects"].as_u64().unwrap(),
        reconnects,
        "applied without a reconnect"
    );
    reconnects
}

/// An invalid port: the field's error is shown and the file is not touched.
async fn an_invalid_port_is_refused_and_the_file_kept(
    st: &GuiStack,
    browser: &Browser,
    shots: &Path,
) {
    let wait = WAIT;
    let port = PORT;
    // An invalid port: the field's error is shown and the file is not touched.
    let before = std::fs::read(&st.config).unwrap();
    browser.fill(port, "70000").await;
    browser.click("#config-save").await;
    let msg = browser
        .wait_text("#config-message", "refusal", wait, |t| {
            t.starts_with("Not saved")
        })
        .await;
    assert!(msg.contains("services[0].local"), "{msg}");
    let field = browser
        .wait_text(
            r#"[data-error-for="services[0].local"]"#,
            "the field error",
            wait,
            |t| !t.is_empty(),
        )
        .await;
    assert!(field.contains("70000"), "{field}");
    let invalid = browser
        .execute("return document.querySelectorAll('#config-form input.invalid').length")
        .await;
    assert!(invalid.as_u64() >= Some(1));
    browser.screenshot(&shots.join("config-invalid.png")).await;
    assert_eq!(
        std::fs::read(&st.config).unwrap(),
        before,
        "the file is unchanged"
    );
    assert!(saw(&st.app_b, "/bytes/12"));
}

/// Logs: the live view shows a line written after it opened; filtering by level works.
async fn the_log_view_follows_live(st: &GuiStack, browser: &Browser, shots: &Path) {
    let wait = WAIT;
    // Logs: the live view shows a line written after it opened.
    browser.click("#nav-logs").await;
    browser
        .wait_text("#log-lines", "log lines", wait, |t| {
            t.contains("agent starting")
        })
        .await;
    let r = st.bearer(Method::POST, "/v1/services/web/test", "").await;
    assert_eq!(r.status, 200);
    let tested: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(tested["detail"], "HTTP 200");
    assert!(
        saw(&st.app_b, "/bytes/2"),
        "the test ran the service's own probe, at the new address"
    );
    browser
        .wait_text("#log-lines", "the new line", wait, |t| {
            t.contains("service tested")
        })
        .await;
    browser.screenshot(&shots.join("logs.png")).await;
    // Filtering by level hides INFO lines.
    browser.execute("const s = document.querySelector('#log-level'); s.value = 'WARN'; s.dispatchEvent(new Event('change'));").await;
    browser
        .wait_text("#log-lines", "no INFO lines", wait, |t| {
            !t.contains(" INFO ")
        })
        .await;
}

/// Operations: reconnect, and the count rises on the status page.
async fn reconnect_from_operations(browser: &Browser, shots: &Path, reconnects: u64) {
    let wait = WAIT;
    // Operations: reconnect, and the count rises on the status page.
    browser.click("#nav-ops").await;
    browser.click("#op-reconnect").await;
    browser
        .wait_text("#op-message", "reconnecting", wait, |t| {
            t.contains("Reconnecting")
        })
        .await;
    browser.screenshot(&shots.join("operations.png")).await;
    browser.click("#nav-status").await;
    browser
        .wait_text("#st-reconnects", "a higher count", wait, |t| {
            t.parse::<u64>().is_ok_and(|n| n > reconnects)
        })
        .await;
    browser
        .wait_text("#tunnel-state", "connected again", wait, |t| {
            t == "connected"
        })
        .await;
}
