//! Request load for the cluster tests, bounded in time: concurrent loops (one request after
//! another on each) or a steady rate, every request on a fresh connection, each outcome kept
//! with its start time so a test can ask which requests after an event failed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::client::try_send;
use crate::harness::routed;

/// Longest one request may take before it counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// What one request came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was sent.
    pub started: Instant,
    /// How long the answer took.
    pub took: Duration,
    /// `Ok` for a 200 with the right body, otherwise what went wrong.
    pub result: Result<(), String>,
}

/// The target of the load: `POST /echo` with a numbered body to one registration.
#[derive(Clone)]
pub struct Target {
    /// Where requests go (a node or the load balancer).
    pub addr: SocketAddr,
    /// Registration ID.
    pub registration: String,
    /// API key.
    pub key: String,
}

impl Target {
    async fn one(&self, n: u64) -> Outcome {
        let started = Instant::now();
        let body = Bytes::from(format!("request {n}"));
        let req = routed(
            Method::POST,
            &self.registration,
            "/echo",
            &self.key,
            body.clone(),
        );
        let result = match try_send(self.addr, req, REQUEST_LIMIT).await {
            Ok(r) if r.status == StatusCode::OK && r.body == body => Ok(()),
            Ok(r) => Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
            Err(e) => Err(e),
        };
        Outcome {
            started,
            took: started.elapsed(),
            result,
        }
    }
}

/// Load running in the background until [`Load::finish`] or its time limit.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// `loops` concurrent loops against `target`, for at most `limit`.
    pub fn loops(target: Target, loops: usize, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let until = Instant::now() + limit;
        let tasks = (0..loops)
            .map(|l| {
                let (target, stop) = (target.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut n = l as u64 * 1_000_000;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        out.push(target.one(n).await);
                        n += 1;
                    }
                    out
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// `rate` requests a second against `target` (each on its own task, so a slow answer
    /// does not slow the rate), for at most `limit`.
    pub fn steady(target: Target, rate: u32, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let until = Instant::now() + limit;
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut running = Vec::new();
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                tick.tick().await;
                let target = target.clone();
                running.push(tokio::spawn(async move { target.one(n).await }));
                n += 1;
            }
            let mut out = Vec::with_capacity(running.len());
            for r in running {
                out.push(r.await.unwrap());
            }
            out
        });
        Self {
            stop,
            tasks: vec![task],
        }
    }

    /// Stop sending and collect every outcome, in start order.
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_by_key(|o| o.started);
        all
    }
}

/// The failed outcomes among `all`.
pub fn failures(all: &[Outcome]) -> Vec<&Outcome> {
    all.iter().filter(|o| o.result.is_err()).collect()
}
