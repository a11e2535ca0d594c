//! The cheapest user-space TCP relay we know how to write, as a yardstick for the tunnel: accepts
//! on `--listen`, connects each connection to `--to` and copies bytes both ways
//! (`copy_bidirectional`, TCP_NODELAY on both legs) on one single-threaded runtime. No
//! encryption, no multiplexing, no accounting. Two of them chained (client → relay → relay →
//! server) cost what any two-process tunnel must at least cost: two more loopback hops and two
//! more processes to wake per round trip. `scripts/bench-mysql.sh` runs them as the ceiling leg.
//!
//!   g2c-plain-relay --listen 127.0.0.1:0 --to 127.0.0.1:3306 [--port-file F]
#![forbid(unsafe_code)]

use g2c_benches::arg;
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let to = arg("--to").expect("--to HOST:PORT");
    let port_file = arg("--port-file");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            let addr = listener.local_addr()?;
            match port_file {
                Some(f) => std::fs::write(f, addr.port().to_string())?,
                None => println!("{addr}"),
            }
            loop {
                let (mut inbound, _) = listener.accept().await?;
                let to = to.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&to).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        })
}
