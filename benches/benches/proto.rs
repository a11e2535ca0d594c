//! Criterion benches for the wire format: encoding and decoding the frames every data stream
//! and control exchange uses.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use g2c_proto::frame::{decode, encode};
use g2c_proto::{Ack, ControlMessage, StreamHeader};

fn frames(c: &mut Criterion) {
    let header = StreamHeader::new("web", "0123456789abcdef", "203.0.113.9:51234".into());
    c.bench_function("stream_header_encode", |b| {
        b.iter(|| encode(std::hint::black_box(&header)).unwrap())
    });
    let bytes = encode(&header).unwrap();
    c.bench_function("stream_header_decode", |b| {
        b.iter(|| {
            decode::<StreamHeader>(&mut BytesMut::from(&bytes[..]))
                .unwrap()
                .unwrap()
        })
    });
    let ack = encode(&Ack::Ok).unwrap();
    c.bench_function("ack_decode", |b| {
        b.iter(|| {
            decode::<Ack>(&mut BytesMut::from(&ack[..]))
                .unwrap()
                .unwrap()
        })
    });
    let hb = encode(&ControlMessage::Heartbeat { seq: 42 }).unwrap();
    c.bench_function("heartbeat_decode", |b| {
        b.iter(|| {
            decode::<ControlMessage>(&mut BytesMut::from(&hb[..]))
                .unwrap()
                .unwrap()
        })
    });
}

criterion_group!(benches, frames);
criterion_main!(benches);
