//! The data-stream and Hello/Welcome handshakes over a real yamux pair on an in-memory duplex:
//! the happy paths, and each adversarial twin (refusal, silence, garbage, wrong version, a
//! closed tunnel, a bad service list).

use std::time::Duration;

use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::handshake::{self, AcceptError, HelloError, OpenError};
use g2c_proto::mux::{self, Mode, Mux, MuxHandle, MuxStream};
use g2c_proto::{AckCode, ControlMessage, ServiceDecl, ServiceKind, StreamHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::Receiver;
use tokio_util::compat::TokioAsyncReadCompatExt;

fn pair() -> (MuxHandle, (MuxHandle, Receiver<MuxStream>)) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (gateway, _) = mux::spawn(a.compat(), Mode::Client);
    (gateway, mux::spawn(b.compat(), Mode::Server))
}

fn web() -> Vec<ServiceDecl> {
    vec![ServiceDecl {
        name: "web".into(),
        kind: ServiceKind::Http,
    }]
}

#[tokio::test]
async fn an_acknowledged_stream_carries_bytes_and_the_header_arrives_whole() {
    let (gateway, (_agent, mut inbound)) = pair();
    let agent = tokio::spawn(async move {
        let mut s = inbound.recv().await.unwrap();
        let header = handshake::accept_data_stream(&mut s)
            .await
            .unwrap()
            .unwrap();
        handshake::ack_data_stream(&mut s).await.unwrap();
        s.write_all(b"pong").await.unwrap();
        s.shutdown().await.unwrap();
        header
    });
    let header = StreamHeader::new("web", "r1", "203.0.113.9:5000".into());
    let mut s = handshake::open_data_stream(&gateway, &header)
        .await
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"pong");
    assert_eq!(agent.await.unwrap(), header);
}

#[tokio::test]
async fn a_refusal_reaches_the_opener_with_its_code() {
    let (gateway, (_agent, mut inbound)) = pair();
    tokio::spawn(async move {
        let mut s = inbound.recv().await.unwrap();
        handshake::accept_data_stream(&mut s).await.unwrap();
        handshake::refuse_data_stream(&mut s, AckCode::ConnectFailed, "web refused".into()).await;
    });
    let err = handshake::open_data_stream(&gateway, &StreamHeader::new("web", "r", "c".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OpenError::Refused { code: AckCode::ConnectFailed, ref message } if message == "web refused"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_times_out_and_a_silent_gateway_too() {
    let (gateway, (_agent, mut inbound)) = pair();
    let held = tokio::spawn(async move {
        let mut s = inbound.recv().await.unwrap();
        // Reads the header, never answers; then waits for a header on a second stream.
        handshake::accept_data_stream(&mut s).await.unwrap();
        let mut silent = inbound.recv().await.unwrap();
        let r = handshake::accept_data_stream(&mut silent).await;
        (s, r)
    });
    let err = handshake::open_data_stream(&gateway, &StreamHeader::new("web", "r", "c".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Timeout), "{err:?}");
    // Half a length prefix, then nothing: the header never completes.
    let mut stalled = gateway.open().await.unwrap();
    stalled.write_all(&[0, 0]).await.unwrap();
    stalled.flush().await.unwrap();
    let (_s, r) = held.await.unwrap();
    assert!(matches!(r, Err(AcceptError::Timeout)), "{r:?}");
}

#[tokio::test]
async fn garbage_and_a_wrong_version_are_refused_without_a_panic() {
    let (gateway, (_agent, mut inbound)) = pair();
    let agent = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..2 {
            let mut s = inbound.recv().await.unwrap();
            results.push(handshake::accept_data_stream(&mut s).await.map(|_| ()));
        }
        results
    });
    let mut garbage = gateway.open().await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 3, b'{', b'x', b'}'])
        .await
        .unwrap();
    let mut old = StreamHeader::new("web", "r", "c".into());
    old.version = 99;
    let err = handshake::open_data_stream(&gateway, &old)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Refused {
                code: AckCode::UnsupportedVersion,
                ..
            }
        ),
        "{err:?}"
    );
    let results = agent.await.unwrap();
    assert!(
        matches!(results[0], Err(AcceptError::Frame(_))),
        "{results:?}"
    );
    assert!(matches!(
        results[1],
        Err(AcceptError::UnsupportedVersion(99))
    ));
}

#[tokio::test]
async fn a_closed_tunnel_is_reported_as_such() {
    let (gateway, (agent, _inbound)) = pair();
    agent.close();
    tokio::time::timeout(Duration::from_secs(5), gateway.closed())
        .await
        .unwrap();
    let err = handshake::open_data_stream(&gateway, &StreamHeader::new("web", "r", "c".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::TunnelClosed), "{err:?}");
}

#[tokio::test]
async fn hello_and_welcome_agree_on_the_session() {
    let (gateway_end, agent_end) = tokio::io::duplex(64 * 1024);
    let gateway = tokio::spawn(async move {
        let mut s = gateway_end;
        let hello = handshake::hear_hello(&mut s).await.unwrap();
        handshake::welcome(&mut s, "abc", Duration::from_secs(7), 32)
            .await
            .unwrap();
        hello
    });
    let mut s = agent_end;
    let welcome = handshake::say_hello(&mut s, "1.2.3", web()).await.unwrap();
    assert_eq!(welcome.registration_id, "abc");
    assert_eq!(welcome.heartbeat, Duration::from_secs(7));
    assert_eq!(welcome.max_streams, 32);
    let hello = gateway.await.unwrap();
    assert_eq!(hello.agent_version, "1.2.3");
    assert_eq!(hello.services, web());
}

#[tokio::test]
async fn a_bad_hello_is_refused_on_the_stream_and_the_agent_hears_why() {
    for services in [
        vec![web()[0].clone(), web()[0].clone()],
        vec![ServiceDecl {
            name: "x".repeat(65),
            kind: ServiceKind::Tcp,
        }],
        (0..65)
            .map(|i| ServiceDecl {
                name: format!("s{i}"),
                kind: ServiceKind::Http,
            })
            .collect(),
    ] {
        let (mut gateway_end, mut agent_end) = tokio::io::duplex(64 * 1024);
        let gateway = tokio::spawn(async move { handshake::hear_hello(&mut gateway_end).await });
        let agent = handshake::say_hello(&mut agent_end, "1", services).await;
        assert!(matches!(agent, Err(HelloError::Refused(_))), "{agent:?}");
        assert!(matches!(
            gateway.await.unwrap(),
            Err(HelloError::Refused(_))
        ));
    }
}

/// The agent version becomes a metric label: kilobytes of it, or control characters, are refused
/// before any series is minted.
#[tokio::test]
async fn an_agent_version_that_is_no_version_is_refused() {
    for version in [
        "x".repeat(4096),
        "1.0\n# HELP".into(),
        String::new(),
        "a\"b".into(),
    ] {
        let (mut gateway_end, mut agent_end) = tokio::io::duplex(64 * 1024);
        let gateway = tokio::spawn(async move { handshake::hear_hello(&mut gateway_end).await });
        let agent = handshake::say_hello(&mut agent_end, &version, web()).await;
        assert!(matches!(agent, Err(HelloError::Refused(_))), "{agent:?}");
        assert!(gateway.await.unwrap().is_err());
    }
    for fine in ["0.1.0", "1.2.3-rc.1+g1234abc", &"9".repeat(64)] {
        assert!(handshake::valid_agent_version(fine), "{fine}");
    }
}

#[tokio::test]
async fn a_wrong_version_garbage_or_silence_ends_the_hello() {
    let (mut gateway_end, mut agent_end) = tokio::io::duplex(64 * 1024);
    let gateway = tokio::spawn(async move { handshake::hear_hello(&mut gateway_end).await });
    let old = ControlMessage::Hello {
        version: 99,
        agent_version: "old".into(),
        services: web(),
    };
    write_frame(&mut agent_end, &old).await.unwrap();
    let answer: Option<ControlMessage> = read_frame(&mut agent_end).await.unwrap();
    assert!(matches!(answer, Some(ControlMessage::Refused { .. })));
    assert!(matches!(
        gateway.await.unwrap(),
        Err(HelloError::Refused(_))
    ));

    let (mut gateway_end, mut agent_end) = tokio::io::duplex(64 * 1024);
    let gateway = tokio::spawn(async move { handshake::hear_hello(&mut gateway_end).await });
    agent_end
        .write_all(&[0, 0, 0, 2, b'{', b'{'])
        .await
        .unwrap();
    assert!(matches!(gateway.await.unwrap(), Err(HelloError::Frame(_))));

    let (mut gateway_end, agent_end) = tokio::io::duplex(64 * 1024);
    drop(agent_end);
    assert!(matches!(
        handshake::hear_hello(&mut gateway_end).await,
        Err(HelloError::Ended)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_the_hello_out() {
    let (mut gateway_end, _agent_end) = tokio::io::duplex(64 * 1024);
    assert!(matches!(
        handshake::hear_hello(&mut gateway_end).await,
        Err(HelloError::Timeout(_))
    ));
    let (_gateway_end, mut agent_end) = tokio::io::duplex(64 * 1024);
    assert!(matches!(
        handshake::say_hello(&mut agent_end, "1", web()).await,
        Err(HelloError::Timeout(_))
    ));
}
