//! Tuning constants both sides agree on: SSH window and packet size, yamux limits, timeouts.
//!
//! The SSH figures follow DESIGN.md's measurements (AES-256-GCM first, large window). russh logs
//! an error for packets above 65,535 bytes, so the packet size stays at that ceiling.

use std::borrow::Cow;
use std::time::Duration;

use russh::{cipher, compression, Preferred};

/// SSH channel window: large, so one bulk stream is not throttled by window updates.
pub const SSH_WINDOW_SIZE: u32 = 16 * 1024 * 1024;
/// Largest SSH packet we announce.
pub const SSH_MAX_PACKET_SIZE: u32 = 65_535;
/// Channel messages (each up to one packet) russh queues for the reader of a channel before its
/// session waits: past it the socket's own buffer holds the rest. russh's default of 100 let a
/// bulk download queue 6 MiB in the gateway, which its allocator kept after the transfer.
pub const SSH_CHANNEL_QUEUE: usize = 16;
/// Read buffer in front of each SSH socket (russh reads a packet in several small pieces): a
/// burst of small packets is one syscall, and a bigger read than this bypasses it. It is
/// zero-filled at creation, so every idle tunnel holds all of it: 64 KiB cost 25 KiB more
/// gateway RSS per idle agent than 16 KiB, for no measured gain.
pub const SSH_READ_BUFFER: usize = 16 * 1024;
/// Most the yamux driver buffers in front of its transport: yamux writes a frame's 12-byte
/// header and its body separately, and russh turns every write into an SSH packet; buffered,
/// a frame is one packet (half the packets, MACs and wake-ups for small messages). The buffer
/// grows to this only under load ([`crate::coalesce`]).
pub const MUX_WRITE_BUFFER: usize = 64 * 1024;
/// Interval between SSH keepalives when the peer is silent.
pub const SSH_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// Unanswered keepalives before the session is declared dead: russh gives up at the fourth
/// silent interval, so a dead (or stopped) peer is noticed 12 s after its last packet.
pub const SSH_KEEPALIVE_MAX: usize = 3;

/// Most concurrent yamux streams on one tunnel.
pub const YAMUX_MAX_STREAMS: usize = 256;
/// Headroom above yamux's floor that lets one stream's window auto-tune towards the path's
/// bandwidth-delay product (without it every stream stays at 256 KiB: 5 MiB/s on a 50 ms path).
pub const YAMUX_WINDOW_HEADROOM: usize = 32 * 1024 * 1024;

/// Default interval between control-stream heartbeats (the gateway's `heartbeat_secs`; it
/// tells each agent the interval in Welcome).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How long the agent may take to answer a stream header.
pub const STREAM_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent waits to connect to a local service before refusing the stream.
pub const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most one read of a spliced stream takes (into a chunk on the stack: an idle stream holds
/// no buffer, see [`crate::copy`]).
pub const SPLICE_BUFFER: usize = 64 * 1024;

/// Algorithm preferences both sides use: AES-256-GCM first (fastest here with AES-NI), and no
/// compression at all (zlib bombs; russh is also built without it).
pub fn ssh_preferred() -> Preferred {
    Preferred {
        cipher: Cow::Borrowed(&[
            cipher::AES_256_GCM,
            cipher::CHACHA20_POLY1305,
            cipher::AES_128_GCM,
            cipher::AES_256_CTR,
        ]),
        compression: Cow::Borrowed(&[compression::NONE]),
        ..Preferred::default()
    }
}
