//! The API wing: the admin listener (probes, metrics, registrations with their live state,
//! disconnect) and the backchannel (registration of agents). Both answer errors through the
//! one mapping in [`crate::error`].

pub mod admin;
pub mod admin_gate;
pub mod backchannel;
