//! The token subsystem: who is calling ([`authenticate`], the one place that checks a key's
//! scopes), [`mint`], the one verification path ([`verify`]), and managing tokens
//! ([`invalidate`], [`revoke`], [`introspect`]). What it knows in memory is a [`TokenState`],
//! kept current by the change feed ([`feed`]); every change it applies is announced as a
//! [`TokenEvent`] for other subsystems to react to.

mod authenticate;
pub mod cache;
pub mod feed;
mod manage;
mod mint;
pub mod revocation;
mod state;
mod verify;

pub use authenticate::{Caller, Credentials, authenticate};
pub use manage::{introspect, invalidate, revoke};
pub use mint::{Minted, find_agent, mint};
pub use state::{TokenEvent, TokenState};
pub use verify::{Death, check_alive, decode, external_id, verify};
