//! Fuzz the wire decoders: any bytes read as a sequence of control messages, stream headers or
//! acks must give frames, a clean end or an error; never a panic, never an allocation past the
//! frame limit.
#![no_main]

use g2c_proto::frame::read_frame;
use g2c_proto::{Ack, ControlMessage, StreamHeader};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

async fn drain<T: serde::de::DeserializeOwned>(mut input: &[u8]) {
    while let Ok(Some(_)) = read_frame::<T, _>(&mut input).await {}
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        drain::<ControlMessage>(data).await;
        drain::<StreamHeader>(data).await;
        drain::<Ack>(data).await;
    });
});
