//! The MySQL/MariaDB health probe. A bare TCP connect that closes before the handshake is what
//! the server counts as a failed connection (`max_connect_errors` then blocks the agent's
//! host, and with it every caller), so this probe completes the protocol: it reads the
//! server's greeting, logs in as a user without a password, and says `COM_QUIT` after an OK.
//! "Access denied" for that user is an answer from a live server, and not a blocking error;
//! a greeting that is an error ("host blocked", "too many connections") is unhealthy.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet the probe reads (greetings and answers are small).
const MAX_PACKET: usize = 64 * 1024;

const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
/// `utf8mb4_general_ci`.
const CHARSET: u8 = 45;
/// Most auth-switch or more-data rounds followed.
const MAX_AUTH_ROUNDS: usize = 3;

/// Server errors that still show a live server willing to serve this host: bad credentials
/// for the probe's user, or an auth method it does not offer that user.
const LIVE_ERRORS: [u16; 3] = [1045, 1698, 1251];

/// Probe the server at `addr`, logging in as `user`; `Ok` names the server, `Err` says why
/// it is unhealthy.
pub async fn probe(addr: &str, user: &str) -> Result<String, String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    login(&mut tcp, user).await
}

/// The protocol part of [`probe`], on any connection.
async fn login<S>(io: &mut S, user: &str) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (seq, greeting) = read_packet(io).await?;
    let hello = Greeting::parse(&greeting)?;
    let mut caps = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
    if hello.caps & CLIENT_PROTOCOL_41 == 0 {
        return Err(format!("{}: a server before protocol 4.1", hello.version));
    }
    let plugin = (hello.caps & CLIENT_PLUGIN_AUTH != 0).then_some(hello.plugin.as_str());
    if plugin.is_some() {
        caps |= CLIENT_PLUGIN_AUTH;
    }
    let mut answer = Vec::with_capacity(64 + user.len());
    answer.extend_from_slice(&caps.to_le_bytes());
    answer.extend_from_slice(&(16u32 << 20).to_le_bytes());
    answer.push(CHARSET);
    answer.extend_from_slice(&[0; 23]);
    answer.extend_from_slice(user.as_bytes());
    answer.push(0);
    answer.push(0); // empty auth response: no password
    if let Some(p) = plugin {
        answer.extend_from_slice(p.as_bytes());
        answer.push(0);
    }
    let mut seq = seq.wrapping_add(1);
    write_packet(io, seq, &answer).await?;
    for _ in 0..MAX_AUTH_ROUNDS {
        let (got, reply) = read_packet(io).await?;
        seq = got.wrapping_add(1);
        match reply.first() {
            Some(0x00) => {
                // COM_QUIT, so the server logs a clean end, not an aborted connection.
                let _ = write_packet(io, 0, &[0x01]).await;
                return Ok(format!("{}: login ok", hello.version));
            }
            Some(0xff) => {
                let (code, message) = server_error(&reply);
                if LIVE_ERRORS.contains(&code) {
                    return Ok(format!("{}: answered ({code})", hello.version));
                }
                return Err(format!("{}: error {code}: {message}", hello.version));
            }
            // Auth switch or more data: the answer for an empty password is empty.
            Some(0xfe) | Some(0x01) => write_packet(io, seq, &[]).await?,
            _ => return Err("unexpected answer to the login".into()),
        }
    }
    Err("the login did not end".into())
}

/// What the probe needs from the server's greeting.
struct Greeting {
    version: String,
    caps: u32,
    plugin: String,
}

impl Greeting {
    fn parse(p: &[u8]) -> Result<Self, String> {
        match p.first() {
            Some(0x0a) => {}
            Some(0xff) => {
                let (code, message) = server_error(p);
                return Err(format!("refused at connect: error {code}: {message}"));
            }
            _ => return Err("not a MySQL/MariaDB server (no protocol 10 greeting)".into()),
        }
        let bad = || "a malformed MySQL greeting".to_owned();
        let end = p[1..].iter().position(|&b| b == 0).ok_or_else(bad)? + 1;
        let version = String::from_utf8_lossy(&p[1..end]).into_owned();
        // version NUL, connection id (4), scramble part 1 (8), filler (1)
        let mut at = end + 1 + 4 + 8 + 1;
        let lower = p.get(at..at + 2).ok_or_else(bad)?;
        let mut caps = u32::from(u16::from_le_bytes([lower[0], lower[1]]));
        at += 2;
        let mut plugin = "mysql_native_password".to_owned();
        // charset (1), status (2), upper capabilities (2), scramble length (1), reserved (10)
        if let Some(upper) = p.get(at + 3..at + 5) {
            caps |= u32::from(u16::from_le_bytes([upper[0], upper[1]])) << 16;
            let scramble_len = usize::from(*p.get(at + 5).ok_or_else(bad)?);
            at += 6 + 10;
            if caps & CLIENT_SECURE_CONNECTION != 0 {
                at += scramble_len.saturating_sub(8).max(13);
            }
            if caps & CLIENT_PLUGIN_AUTH != 0 {
                if let Some(rest) = p.get(at..) {
                    let name = rest.split(|&b| b == 0).next().unwrap_or_default();
                    if !name.is_empty() {
                        plugin = String::from_utf8_lossy(name).into_owned();
                    }
                }
            }
        }
        Ok(Self {
            version,
            caps,
            plugin,
        })
    }
}

/// Code and message of an ERR packet.
fn server_error(p: &[u8]) -> (u16, String) {
    let code = p.get(1..3).map_or(0, |c| u16::from_le_bytes([c[0], c[1]]));
    let mut text = p.get(3..).unwrap_or_default();
    if text.first() == Some(&b'#') {
        text = text.get(6..).unwrap_or_default();
    }
    (code, String::from_utf8_lossy(text).into_owned())
}

async fn read_packet<S: AsyncRead + Unpin>(io: &mut S) -> Result<(u8, Vec<u8>), String> {
    let mut head = [0u8; 4];
    io.read_exact(&mut head)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    if len > MAX_PACKET {
        return Err(format!("a {len}-byte packet from the server"));
    }
    let mut body = vec![0; len];
    io.read_exact(&mut body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok((head[3], body))
}

async fn write_packet<S: AsyncWrite + Unpin>(
    io: &mut S,
    seq: u8,
    body: &[u8],
) -> Result<(), String> {
    let len = (body.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&[len[0], len[1], len[2], seq]);
    out.extend_from_slice(body);
    io.write_all(&out).await.map_err(|e| format!("send: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_error_greetings_are_unhealthy_not_panics() {
        assert!(Greeting::parse(b"").is_err());
        assert!(Greeting::parse(b"HTTP/1.1 400").is_err());
        assert!(Greeting::parse(b"\x0a5.5").is_err());
        assert!(Greeting::parse(b"\x0a5.5\0\x01").is_err());
        let blocked = b"\xff\x69\x04Host '127.0.0.2' is blocked";
        let e = Greeting::parse(blocked).err().unwrap();
        assert!(e.contains("1129") && e.contains("blocked"), "{e}");
    }
}
