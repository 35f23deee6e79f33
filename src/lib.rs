//! performchat: a self-hosted chat server for companies' support and AI agents. A company's
//! backend trades its API key pair for a short-lived JWT naming one of its end users and one
//! agent (`POST /rest/v1/auth/token`); the user's chat widget presents that token.
//!
//! Module map: `app` (the composition root: state, background tasks, shutdown), `config`
//! (command line and settings), `error` (the one error type of the API), `auth` (pure rules:
//! fields, keys, expiresIn, JWTs), `token` (the token subsystem: authenticate, mint, verify,
//! manage, its in-memory state and the change feed that keeps it current), `db` (the storage
//! seam over SQLite and PostgreSQL), `audit` (the audit trail's writer), `limits` (rate
//! limits), `metrics`, `clock`, `logs` (where log lines go), `http` (thin handlers), `cli`
//! (operator commands).

pub mod agents;
pub mod app;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod ids;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod token;
