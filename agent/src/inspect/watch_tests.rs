//! The watch fed real HTTP/1.1 byte streams, split at every point, and the ways a stream ends.

use super::*;
use g2c_proto::http1::MAX_HEAD;

fn inspector() -> Arc<Inspector> {
    Arc::new(Inspector::default())
}

fn all(i: &Inspector) -> Vec<Arc<Entry>> {
    i.list(0, 1000, |_| true)
}

const REQ: &[u8] = b"GET /a?token=s3cret&x=1 HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer abc\r\nX-Request-Id: rid-7\r\n\r\n";
const POST: &[u8] = b"POST /b HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: s=1\r\n\r\nhello";
const RESP2: &[u8] =
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";

#[test]
fn requests_split_anywhere_are_recorded_in_order_with_credentials_masked() {
    let reqs = [REQ, POST].concat();
    let resps = [RESP, RESP2].concat();
    for split in 0..reqs.len() {
        let i = inspector();
        let mut w = HttpWatch::new(i.clone(), "web", true);
        w.read(&reqs[..split]);
        w.read(&reqs[split..]);
        let rsplit = split.min(resps.len());
        w.wrote(&resps[..rsplit]);
        w.wrote(&resps[rsplit..]);
        let got = all(&i);
        assert_eq!(got.len(), 2, "split {split}");
        let (a, b) = (&got[0], &got[1]);
        assert_eq!(a.method(), Some("GET"));
        assert_eq!(a.target(), Some("/a?token=******&x=1"));
        assert_eq!(a.status, Some(200));
        assert_eq!(a.request_id(), Some("rid-7"));
        let head = String::from_utf8_lossy(a.request_head.as_deref().unwrap()).into_owned();
        assert!(
            head.contains("Authorization: **********\r\n") && !head.contains("abc"),
            "{head}"
        );
        assert!(!head.contains("s3cret"));
        let resp = String::from_utf8_lossy(a.response_head.as_deref().unwrap()).into_owned();
        assert!(resp.contains("Set-Cookie: ***\r\n"), "{resp}");
        assert_eq!(&*a.response_body.as_ref().unwrap().bytes, b"hello");
        assert_eq!(a.bytes_in, REQ.len() as u64);
        assert_eq!(a.bytes_out, RESP.len() as u64);
        assert_eq!((b.method(), b.status), (Some("POST"), Some(201)));
        assert_eq!(&*b.request_body.as_ref().unwrap().bytes, b"abcde");
        assert!(b.request_body.as_ref().unwrap().complete());
        assert_eq!(&*b.response_body.as_ref().unwrap().bytes, b"ok");
        assert!(a.failure.is_none() && b.failure.is_none());
        assert!(b.replayable() && a.replayable());
    }
}

#[test]
fn without_capture_no_body_is_kept_and_a_body_request_is_not_replayable() {
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    w.read(POST);
    w.wrote(RESP);
    let e = &all(&i)[0];
    assert!(e.request_body.is_none() && e.response_body.is_none());
    assert!(!e.replayable());
}

#[test]
fn a_body_past_a_kib_is_kept_truncated() {
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", true);
    let body = vec![b'x'; 5000];
    let head = format!(
        "PUT /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.read(head.as_bytes());
    for piece in body.chunks(700) {
        w.read(piece);
    }
    w.wrote(b"HTTP/1.1 204 No Content\r\n\r\n");
    let e = &all(&i)[0];
    let b = e.request_body.as_ref().unwrap();
    assert_eq!((b.bytes.len(), b.length), (1024, 5000));
    assert!(!e.replayable());
    assert_eq!(e.status, Some(204));
}

#[test]
fn interim_answers_head_requests_and_until_close_bodies_are_followed() {
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    w.read(b"HEAD /h HTTP/1.1\r\n\r\n");
    w.wrote(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
    w.read(b"POST /c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    w.wrote(b"HTTP/1.1 100 Continue\r\n\r\n");
    w.read(b"hi");
    w.wrote(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    w.read(b"GET /close HTTP/1.1\r\n\r\n");
    w.wrote(b"HTTP/1.1 200 OK\r\n\r\nuntil the end");
    assert_eq!(all(&i).len(), 2);
    w.shutdown();
    drop(w);
    let got = all(&i);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].status, Some(200));
    assert_eq!(got[2].target(), Some("/close"));
    assert!(got[2].failure.is_none(), "a close ends such a body");
}

#[test]
fn an_app_that_closes_without_answering_is_the_local_apps_failure() {
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    w.read(REQ);
    w.shutdown();
    w.read_closed();
    drop(w);
    let f = all(&i)[0].failure.clone().unwrap();
    assert_eq!((f.code, f.who), ("local_service_unavailable", "local_app"));
}

#[test]
fn a_stream_the_gateway_closes_first_is_the_gateways() {
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    w.read(REQ);
    w.wrote(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal");
    w.read_closed();
    w.shutdown();
    drop(w);
    let e = &all(&i)[0];
    assert_eq!(e.status, Some(200));
    assert_eq!(e.failure.as_ref().unwrap().who, "gateway");
}

#[test]
fn an_upgrade_ends_the_watch_and_garbage_stops_it_without_a_panic() {
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    w.read(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    w.wrote(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    w.read(b"\x81\x05hello GET / HTTP/1.1\r\n\r\n");
    w.wrote(b"\x81\x05hello");
    drop(w);
    let got = all(&i);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, Some(101));

    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    w.read(REQ);
    w.wrote(b"\x00\x01 not http at all\r\n\r\n");
    w.wrote(RESP);
    drop(w);
    let got = all(&i);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].failure.as_ref().unwrap().code, "bad_response");

    // Heads past the limit, and an answer nobody asked for, switch the watch off.
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    w.wrote(RESP);
    w.read(&vec![b'a'; MAX_HEAD + 10]);
    drop(w);
    assert!(all(&i).is_empty());
}

#[test]
fn an_inspector_turned_off_records_nothing() {
    let i = inspector();
    i.configure(&crate::config::InspectorConfig {
        enabled: false,
        ..Default::default()
    });
    let mut w = HttpWatch::new(i.clone(), "web", true);
    w.read(REQ);
    w.wrote(RESP);
    assert!(all(&i).is_empty());
}

/// Not a test: how long the watch takes per request, for `cargo test --release -- --ignored
/// --nocapture watch_cost` (speed is measured, never asserted).
#[test]
#[ignore]
fn watch_cost() {
    let i = inspector();
    let mut w = HttpWatch::new(i.clone(), "web", false);
    let n = 200_000;
    let started = std::time::Instant::now();
    for _ in 0..n {
        w.read(REQ);
        w.wrote(RESP);
    }
    let per = started.elapsed() / n;
    println!("{per:?} per request ({} kept)", i.len());
}
