//! Criterion benches of the tunnel's moving parts: a yamux stream open + echo over an in-memory
//! pipe, one full HTTP round trip through a real in-process gateway and agent (SSH + yamux +
//! pooled upstream), and 1 MiB through the same tunnel. Loopback only.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use g2c_proto::mux::{self, Mode, Mux};
use g2c_tests::backend::Backend;
use g2c_tests::harness::{routed, TestAgent, TestGateway};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_util::compat::TokioAsyncReadCompatExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn yamux_open_echo(c: &mut Criterion) {
    let rt = runtime();
    let client = rt.block_on(async {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (client, _none) = mux::spawn(a.compat(), Mode::Client);
        let (_server, mut inbound) = mux::spawn(b.compat(), Mode::Server);
        tokio::spawn(async move {
            while let Some(mut s) = inbound.recv().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        client
    });
    c.bench_function("yamux_stream_open_echo_64B", |b| {
        b.to_async(&rt).iter(|| async {
            let mut s = client.open().await.unwrap();
            s.write_all(&[7u8; 64]).await.unwrap();
            let mut buf = [0u8; 64];
            s.read_exact(&mut buf).await.unwrap();
        })
    });
}

struct Stack {
    _gw: TestGateway,
    _agent: TestAgent,
    _app: Backend,
    id: String,
    key: String,
    caller: Arc<Mutex<SendRequest<Full<Bytes>>>>,
}

async fn stack() -> Stack {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let tcp = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    Stack {
        id: agent.id().to_owned(),
        _gw: gw,
        _agent: agent,
        _app: app,
        key,
        caller: Arc::new(Mutex::new(sender)),
    }
}

async fn get(stack: &Stack, path: &str) -> usize {
    let mut sender = stack.caller.lock().await;
    // An HTTP/1 connection takes the next request only once its task has seen the last response
    // end; on a loaded machine that can come after the body was read here.
    sender
        .ready()
        .await
        .expect("the caller's connection stays open");
    let resp = sender
        .send_request(routed(Method::GET, &stack.id, path, &stack.key, ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap().to_bytes().len()
}

fn through_the_tunnel(c: &mut Criterion) {
    let rt = runtime();
    let s = rt.block_on(stack());
    c.bench_function("http_round_trip_through_gateway_and_agent", |b| {
        b.to_async(&rt).iter(|| get(&s, "/hello"))
    });
    let mut g = c.benchmark_group("bulk");
    g.throughput(Throughput::Bytes(1 << 20));
    g.sample_size(20);
    g.bench_function("1MiB_through_ssh_and_yamux", |b| {
        b.to_async(&rt)
            .iter(|| async { assert_eq!(get(&s, "/bytes/1048576").await, 1 << 20) })
    });
    g.finish();
}

criterion_group!(benches, yamux_open_echo, through_the_tunnel);
criterion_main!(benches);
