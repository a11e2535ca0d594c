//! The HTTP health probe: `GET <path>` over a fresh connection, the status line read and
//! checked against the statuses the operator counts as healthy.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::HealthCheck;

/// Most bytes read looking for the status line.
const MAX_HEAD: usize = 4096;

/// Send the probe's request on `io` and judge the answer's status.
pub async fn check<S>(io: &mut S, host: &str, check: &HealthCheck) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: g2c-agent-health\r\nConnection: close\r\n\r\n",
        check.path()
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let n = io.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/"));
    match status {
        Some(code) if check.healthy_status(code) => Ok(format!("HTTP {code}")),
        Some(code) => Err(format!("HTTP {code} from {}", check.path())),
        None => Err(format!(
            "not an HTTP answer: {:?}",
            line.chars().take(60).collect::<String>()
        )),
    }
}
