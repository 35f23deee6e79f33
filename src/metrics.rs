//! Prometheus metrics, served at `GET /metrics`. One registry per server value (no global
//! recorder), so servers started side by side in one process, as the tests do, count apart.

use std::hash::{Hash, Hasher};

use axum::extract::MatchedPath;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counting a request allocates nothing: the method is `'static` and the route is the
/// router's own (see [`Route`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: Route,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Route,
}

/// The route label of a request: the path the router matched, as written in the router
/// (`/rest/v1/auth/token`, `/rest/v1/docs/{*rest}`), or "unmatched" when no route took the
/// request, so that a scan of random paths cannot grow the metric families. It holds the
/// router's `MatchedPath`, whose clone is an `Arc` clone.
#[derive(Clone, Debug)]
pub struct Route(Option<MatchedPath>);

impl Route {
    /// The route of a request whose extensions hold `matched` (none: no route matched).
    pub fn new(matched: Option<MatchedPath>) -> Self {
        Route(matched)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// An HTTP method as a `'static` label.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub name: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily,
    pub tokens_minted: Counter,
    pub users_created: Counter,
    pub invalidations: Counter,
    pub revocations: Counter,
    pub auth_failures: Counter,
    pub rate_limited: Counter,
    pub cache_hits: Family<NameLabels, Counter>,
    pub cache_misses: Family<NameLabels, Counter>,
    pub cache_entries: Family<NameLabels, Gauge>,
    pub db_pool_connections: Family<NameLabels, Gauge>,
    pub db_pool_idle: Family<NameLabels, Gauge>,
    pub change_feed_lag_ms: Gauge,
    pub change_feed_seq: Gauge,
    pub audit_queued: Gauge,
    pub audit_dropped: Counter,
    pub chat_sockets: Gauge,
    pub chat_socket_closes: Family<CodeLabels, Counter>,
    pub chat_messages: Family<NameLabels, Counter>,
    /// From a message's commit time to its push to this instance's sockets, by how it came:
    /// `local` (committed here, handed over in memory) or `database` (read after a
    /// notification, a poll or a gap).
    pub chat_delivery_lag: Family<NameLabels, Histogram, fn() -> Histogram>,
    /// Webhook attempts by outcome: `delivered`, `failed` (tried again later, or given up
    /// after the last attempt) or `gone` (410: the webhook is disabled).
    pub webhook_attempts: Family<NameLabels, Counter>,
    /// From an event's commit to its delivery (a 2xx), retries included.
    pub webhook_delivery: Histogram,
    /// LLM replies by outcome: `complete`, `failed`, `retried` (a 429, tried again later).
    pub llm_replies: Family<NameLabels, Counter>,
    /// Tokens LLM replies took, by kind: `prompt`, `completion`.
    pub llm_tokens: Family<NameLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("performchat");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            tokens_minted: Counter::default(),
            users_created: Counter::default(),
            invalidations: Counter::default(),
            revocations: Counter::default(),
            auth_failures: Counter::default(),
            rate_limited: Counter::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_entries: Family::default(),
            db_pool_connections: Family::default(),
            db_pool_idle: Family::default(),
            change_feed_lag_ms: Gauge::default(),
            change_feed_seq: Gauge::default(),
            audit_queued: Gauge::default(),
            audit_dropped: Counter::default(),
            chat_sockets: Gauge::default(),
            chat_socket_closes: Family::default(),
            chat_messages: Family::default(),
            chat_delivery_lag: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            webhook_attempts: Family::default(),
            // 1 ms to ~9 h: a delivery after the last retry is over an hour late.
            webhook_delivery: Histogram::new(exponential_buckets(0.001, 4.0, 13)),
            llm_replies: Family::default(),
            llm_tokens: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.latency.clone(),
        );
        registry.register("tokens_minted", "Tokens minted", m.tokens_minted.clone());
        registry.register(
            "users_created",
            "End users seen for the first time",
            m.users_created.clone(),
        );
        registry.register(
            "invalidations",
            "Users whose tokens were invalidated",
            m.invalidations.clone(),
        );
        registry.register(
            "revocations",
            "Single tokens revoked",
            m.revocations.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for an unknown keyId or a wrong keySecret",
            m.auth_failures.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "cache_hits",
            "Cache look-ups answered from memory",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Cache look-ups that read the database",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_entries",
            "Entries held per cache",
            m.cache_entries.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open database connections per pool",
            m.db_pool_connections.clone(),
        );
        registry.register(
            "db_pool_idle",
            "Idle database connections per pool",
            m.db_pool_idle.clone(),
        );
        registry.register(
            "change_feed_lag_milliseconds",
            "Time since the change log was last read",
            m.change_feed_lag_ms.clone(),
        );
        registry.register(
            "change_feed_seq",
            "Last change applied",
            m.change_feed_seq.clone(),
        );
        registry.register(
            "audit_queued",
            "Audit events waiting to be written",
            m.audit_queued.clone(),
        );
        registry.register(
            "audit_dropped",
            "Failed-authentication audit events not recorded because the audit queue was full",
            m.audit_dropped.clone(),
        );
        registry.register(
            "chat_sockets",
            "Chat sockets open (authenticated) on this instance",
            m.chat_sockets.clone(),
        );
        registry.register(
            "chat_socket_closes",
            "Chat sockets closed by the server, by close code",
            m.chat_socket_closes.clone(),
        );
        registry.register(
            "chat_messages",
            "Chat messages stored, by sender kind",
            m.chat_messages.clone(),
        );
        registry.register(
            "chat_delivery_lag_seconds",
            "Time from a message's commit to its push to this instance's sockets, by way",
            m.chat_delivery_lag.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook attempts by outcome (delivered, failed, gone)",
            m.webhook_attempts.clone(),
        );
        registry.register(
            "webhook_delivery_seconds",
            "Time from a webhook event's commit to its delivery, retries included",
            m.webhook_delivery.clone(),
        );
        registry.register(
            "llm_replies",
            "LLM replies by outcome (complete, failed, retried)",
            m.llm_replies.clone(),
        );
        registry.register(
            "llm_tokens",
            "Tokens LLM replies took, by kind (prompt, completion)",
            m.llm_tokens.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn chat_closed(&self, code: u16) {
        self.chat_socket_closes
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhook_attempts
            .get_or_create(&NameLabels { name: outcome })
            .inc();
    }

    /// An LLM reply ended as `outcome`, with the tokens it took.
    pub fn llm_reply(&self, outcome: &'static str, prompt: i64, completion: i64) {
        self.llm_replies
            .get_or_create(&NameLabels { name: outcome })
            .inc();
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            if n > 0 {
                self.llm_tokens
                    .get_or_create(&NameLabels { name: kind })
                    .inc_by(n as u64);
            }
        }
    }

    /// A webhook event delivered `lag_ms` after its commit.
    pub fn webhook_delivered(&self, lag_ms: i64) {
        self.webhook_attempt("delivered");
        self.webhook_delivery.observe(lag_ms.max(0) as f64 / 1000.0);
    }

    /// Records how long a message took from its commit to its push here.
    pub fn chat_delivered(&self, via: &'static str, lag_ms: i64) {
        self.chat_delivery_lag
            .get_or_create(&NameLabels { name: via })
            .observe(lag_ms.max(0) as f64 / 1000.0);
    }

    pub fn cache(&self, name: &'static str, hit: bool) {
        let family = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        family.get_or_create(&NameLabels { name }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
