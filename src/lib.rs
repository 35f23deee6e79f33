//! performchat: a self-hosted chat-auth server. A company's backend trades its API key pair
//! for a short-lived JWT naming one of its end users and one agent
//! (`POST /rest/v1/auth/token`); the user's chat widget presents that token.
//!
//! Module map: `config` (command line), `error` (the one error type), `auth` (pure rules:
//! fields, keys, expiresIn, JWTs), `db` (storage seam over SQLite and PostgreSQL),
//! `revocation` + `sync` (in-memory verification state and the change feed that keeps it
//! current), `service` (the operations), `http` (thin handlers), `cli` (operator commands).

pub mod audit;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod revocation;
pub mod service;
pub mod sync;
