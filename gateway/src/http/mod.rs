//! HTTP listeners of the gateway: the caller-facing front door and the shared serve loop.

pub mod body;
pub mod framing;
pub mod front;
pub mod headers;
pub mod record;
pub mod route;
pub mod serve;
pub mod upstream;
