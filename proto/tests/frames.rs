//! Wire-format tests: every frame type round-trips; truncated, oversized and garbage input give
//! errors (never panics); clean EOF is `Ok(None)`.

use bytes::{BufMut, BytesMut};
use g2c_proto::frame::{decode, encode, read_frame, write_frame, FrameError, MAX_FRAME_LEN};
use g2c_proto::registration::{RegisterRequest, RegisterResponse};
use g2c_proto::{
    Ack, AckCode, AgentReport, ControlMessage, ServiceDecl, ServiceHealth, ServiceKind,
    StreamHeader, PROTOCOL_VERSION,
};

fn all_control() -> Vec<ControlMessage> {
    vec![
        ControlMessage::Hello {
            version: PROTOCOL_VERSION,
            agent_version: "1.2.3".into(),
            services: vec![
                ServiceDecl {
                    name: "web".into(),
                    kind: ServiceKind::Http,
                },
                ServiceDecl {
                    name: "db".into(),
                    kind: ServiceKind::Tcp,
                },
            ],
        },
        ControlMessage::Welcome {
            version: PROTOCOL_VERSION,
            registration_id: "abc".into(),
            heartbeat_secs: 10,
            max_streams: 256,
        },
        ControlMessage::Heartbeat { seq: 7 },
        ControlMessage::HeartbeatAck { seq: u64::MAX },
        ControlMessage::GoAway {
            reason: "drain".into(),
        },
        ControlMessage::Draining,
        ControlMessage::Refused {
            reason: "version".into(),
        },
        ControlMessage::Report {
            report: AgentReport {
                reconnects: 3,
                active_streams: 2,
                services: vec![ServiceHealth {
                    name: "db".into(),
                    healthy: false,
                    latency_us: 1500,
                }],
            },
        },
    ]
}

#[test]
fn a_report_with_an_unknown_field_is_an_error() {
    let text =
        br#"{"type":"report","report":{"reconnects":1,"active_streams":0,"services":[],"evil":1}}"#;
    let mut buf = BytesMut::new();
    buf.put_u32(text.len() as u32);
    buf.put_slice(text);
    assert!(decode::<ControlMessage>(&mut buf).is_err());
}

#[test]
fn every_control_message_round_trips() {
    for msg in all_control() {
        let mut buf = BytesMut::from(&encode(&msg).unwrap()[..]);
        let back: ControlMessage = decode(&mut buf).unwrap().unwrap();
        assert_eq!(back, msg);
        assert!(buf.is_empty());
    }
}

#[test]
fn header_acks_and_registration_round_trip() {
    let h = StreamHeader::new("web", "req-1", "10.0.0.1:5000".into());
    let mut buf = BytesMut::from(&encode(&h).unwrap()[..]);
    assert_eq!(decode::<StreamHeader>(&mut buf).unwrap().unwrap(), h);
    for ack in [
        Ack::Ok,
        Ack::Error {
            code: AckCode::ConnectFailed,
            message: "refused".into(),
        },
        Ack::Error {
            code: AckCode::UnknownService,
            message: String::new(),
        },
        Ack::Error {
            code: AckCode::ConnectTimeout,
            message: String::new(),
        },
        Ack::Error {
            code: AckCode::UnsupportedVersion,
            message: String::new(),
        },
        Ack::Error {
            code: AckCode::Overloaded,
            message: String::new(),
        },
    ] {
        let mut buf = BytesMut::from(&encode(&ack).unwrap()[..]);
        assert_eq!(decode::<Ack>(&mut buf).unwrap().unwrap(), ack);
    }
    let resp = RegisterResponse {
        registration_id: "abc".into(),
        tunnel_port: 11000,
        ssh_host: "gw".into(),
        ssh_port: 22,
        gateway_host_key: "ssh-ed25519 AAAA".into(),
    };
    let mut buf = BytesMut::from(&encode(&resp).unwrap()[..]);
    assert_eq!(decode::<RegisterResponse>(&mut buf).unwrap().unwrap(), resp);
}

#[test]
fn registration_request_debug_hides_token() {
    let r = RegisterRequest {
        name: None,
        public_key: "k".into(),
        token: "g2ct_secret".into(),
    };
    assert!(!format!("{r:?}").contains("g2ct_secret"));
}

#[test]
fn truncated_frames_wait_for_more_bytes() {
    let full = encode(&ControlMessage::Heartbeat { seq: 1 }).unwrap();
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert!(
            decode::<ControlMessage>(&mut buf).unwrap().is_none(),
            "cut at {cut}"
        );
        assert_eq!(buf.len(), cut, "a partial frame is not consumed");
    }
}

#[test]
fn oversized_frames_are_refused_before_allocation() {
    let mut buf = BytesMut::new();
    buf.put_u32((MAX_FRAME_LEN + 1) as u32);
    assert!(matches!(
        decode::<ControlMessage>(&mut buf),
        Err(FrameError::TooLong(_))
    ));
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    assert!(matches!(
        decode::<Ack>(&mut buf),
        Err(FrameError::TooLong(_))
    ));
    let huge = ControlMessage::GoAway {
        reason: "x".repeat(MAX_FRAME_LEN),
    };
    assert!(matches!(encode(&huge), Err(FrameError::TooLong(_))));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let payloads: [&[u8]; 5] = [
        b"abc",
        b"{}",
        br#"{"type":"nope"}"#,
        b"",
        br#"{"type":"heartbeat","seq":1,"x":1}"#,
    ];
    for p in payloads {
        let mut s = (p.len() as u32).to_be_bytes().to_vec();
        s.extend_from_slice(p);
        let mut buf = BytesMut::from(&s[..]);
        assert!(decode::<ControlMessage>(&mut buf).is_err(), "{s:?}");
    }
    // A deterministic pseudo-random sweep over every decoder.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..5000 {
        let len = (x % 64) as usize;
        let mut bytes = Vec::with_capacity(len + 4);
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push((x & 0xff) as u8);
        }
        let _ = decode::<ControlMessage>(&mut BytesMut::from(&bytes[..]));
        let _ = decode::<StreamHeader>(&mut BytesMut::from(&bytes[..]));
        let _ = decode::<Ack>(&mut BytesMut::from(&bytes[..]));
        let _ = decode::<RegisterResponse>(&mut BytesMut::from(&bytes[..]));
    }
}

#[tokio::test]
async fn async_reader_handles_eof_truncation_and_limits() {
    // Clean EOF before a frame.
    let mut empty: &[u8] = &[];
    assert!(read_frame::<Ack, _>(&mut empty).await.unwrap().is_none());
    // EOF inside the length prefix and inside the payload.
    let full = encode(&Ack::Ok).unwrap();
    for cut in 1..full.len() {
        let mut r: &[u8] = &full[..cut];
        assert!(
            matches!(
                read_frame::<Ack, _>(&mut r).await,
                Err(FrameError::Truncated)
            ),
            "cut {cut}"
        );
    }
    // Oversized length prefix.
    let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0];
    assert!(matches!(
        read_frame::<Ack, _>(&mut r).await,
        Err(FrameError::TooLong(_))
    ));
    // Two frames back to back, then raw bytes stay unread for the splice.
    let mut out = Vec::new();
    write_frame(&mut out, &Ack::Ok).await.unwrap();
    write_frame(&mut out, &ControlMessage::Heartbeat { seq: 3 })
        .await
        .unwrap();
    out.extend_from_slice(b"RAW");
    let mut r: &[u8] = &out;
    assert_eq!(read_frame::<Ack, _>(&mut r).await.unwrap(), Some(Ack::Ok));
    assert_eq!(
        read_frame::<ControlMessage, _>(&mut r).await.unwrap(),
        Some(ControlMessage::Heartbeat { seq: 3 })
    );
    assert_eq!(r, b"RAW");
}
