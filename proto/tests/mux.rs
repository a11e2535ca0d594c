//! yamux driver tests over an in-memory duplex: streams open both ways, bytes and half-close
//! pass, the stream limit holds, and closing one side ends the other.

use g2c_proto::mux::{self, Mode, Mux};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::TokioAsyncReadCompatExt;

fn pair() -> (
    (mux::MuxHandle, tokio::sync::mpsc::Receiver<mux::MuxStream>),
    (mux::MuxHandle, tokio::sync::mpsc::Receiver<mux::MuxStream>),
) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (
        mux::spawn(a.compat(), Mode::Client),
        mux::spawn(b.compat(), Mode::Server),
    )
}

#[test]
fn default_config_does_not_assert() {
    let _ = mux::config();
}

#[tokio::test]
async fn streams_carry_bytes_and_half_close_both_ways() {
    let ((client, _cin), (server, mut sin)) = pair();
    let echo = tokio::spawn(async move {
        let mut s = sin.recv().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap(); // ends on the client's half-close
        s.write_all(&got).await.unwrap();
        s.write_all(b"!").await.unwrap();
        s.shutdown().await.unwrap();
        drop(server);
    });
    let mut s = client.open().await.unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(&back[..payload.len()], &payload[..]);
    assert_eq!(&back[payload.len()..], b"!");
    echo.await.unwrap();
}

#[tokio::test]
async fn closing_one_side_ends_the_other() {
    let ((client, _cin), (server, _sin)) = pair();
    client.close();
    tokio::time::timeout(std::time::Duration::from_secs(5), server.closed())
        .await
        .expect("peer noticed the close");
    assert!(server.is_closed());
    assert!(client.open().await.is_err(), "no streams on a closed mux");
}

#[tokio::test]
async fn stream_limit_is_enforced() {
    let ((client, _cin), (_server, mut sin)) = pair();
    // The far side answers each stream (which acknowledges it) and keeps it open.
    tokio::spawn(async move {
        let mut held_far = Vec::new();
        while let Some(mut s) = sin.recv().await {
            let _ = s.write_all(b"a").await;
            held_far.push(s);
        }
    });
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..(g2c_proto::tuning::YAMUX_MAX_STREAMS + 8) {
        match client.open().await {
            Ok(mut s) => {
                s.write_all(b"x").await.unwrap();
                held.push(s);
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "opening past the limit must fail");
    assert_eq!(held.len(), g2c_proto::tuning::YAMUX_MAX_STREAMS);
    // The connection survives (yamux itself would have torn it down), and a dropped stream
    // frees its place.
    assert!(matches!(
        client.open().await,
        Err(mux::MuxError::TooManyStreams)
    ));
    assert!(!client.is_closed());
    held.pop();
    let mut s = client.open().await.expect("a place is free again");
    s.write_all(b"y").await.unwrap();
}

#[tokio::test]
async fn a_read_waiting_on_a_stream_fails_once_its_own_side_closes_the_connection() {
    // yamux drops its stream table on a local close without waking readers; the stream wrapper
    // must end the read anyway, or the reading task outlives its tunnel.
    let ((client, _cin), (server, mut sin)) = pair();
    let mut c = client.open().await.unwrap();
    c.write_all(b"x").await.unwrap();
    let mut s = sin.recv().await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        s.read(&mut buf).await
    });
    server.close();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("the waiting read ends")
        .unwrap();
    assert!(!matches!(ended, Ok(n) if n > 0), "{ended:?}");
    let mut w = [0u8; 4];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut w))
        .await
        .expect("the peer's read ends too");
}
