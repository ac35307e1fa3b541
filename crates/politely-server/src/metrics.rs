//! Counters and gauges, rendered as Prometheus text at `GET /metrics`.

use politely_proto::{CloseCode, ErrorCode};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) connections: AtomicI64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) peers: AtomicI64,
    pub(crate) rooms: AtomicI64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) frames_relayed: AtomicU64,
    pub(crate) queue_dropped_frames: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) grace_expired: AtomicU64,
    pub(crate) origin_refused: AtomicU64,
    /// TCP connections refused at accept: over `max_connections`, over the per-address limit.
    pub(crate) refused_total: AtomicU64,
    pub(crate) refused_address: AtomicU64,
    /// Bytes of the queued-bytes budget reserved by send queues.
    pub(crate) queued_bytes: AtomicUsize,
    /// Frames that found the queued-bytes budget spent (each disconnected its target).
    pub(crate) queue_budget_refused: AtomicU64,
    /// A node of several (see `cluster`): frames this node's channel brought for its peers,
    /// frames fetched from inboxes to fill gaps, duplicates dropped, peers of dead nodes this
    /// node parked, times it registered its peers again, and its calls to Redis (count, total
    /// microseconds, failures).
    pub(crate) cluster_delivered: AtomicU64,
    pub(crate) cluster_gap_frames: AtomicU64,
    pub(crate) cluster_duplicates: AtomicU64,
    pub(crate) cluster_reaped: AtomicU64,
    pub(crate) cluster_registered_again: AtomicU64,
    pub(crate) redis_calls: AtomicU64,
    pub(crate) redis_micros: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    closes: [AtomicU64; CloseCode::ALL.len()],
}

impl Metrics {
    pub(crate) fn error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.errors[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn close(&self, code: CloseCode) {
        let i = CloseCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.closes[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP politely_{name} {help}");
            let _ = writeln!(out, "# TYPE politely_{name} {kind}");
            let _ = writeln!(out, "politely_{name} {value}");
        };
        let g = |v: &AtomicI64| v.load(Relaxed).to_string();
        let c = |v: &AtomicU64| v.load(Relaxed).to_string();
        metric(
            "connections",
            "gauge",
            "Open WebSocket connections.",
            g(&self.connections),
        );
        metric(
            "connections_total",
            "counter",
            "WebSocket connections accepted.",
            c(&self.connections_total),
        );
        metric(
            "peers",
            "gauge",
            "Peers in rooms, connected or within their resume grace period.",
            g(&self.peers),
        );
        metric(
            "rooms",
            "gauge",
            "Rooms with at least one peer (on a node of several: one of this node's).",
            g(&self.rooms),
        );
        metric(
            "frames_received_total",
            "counter",
            "Text frames received from clients.",
            c(&self.frames_received),
        );
        metric(
            "frames_relayed_total",
            "counter",
            "Signal frames relayed to a peer's queue.",
            c(&self.frames_relayed),
        );
        metric(
            "queue_dropped_frames_total",
            "counter",
            "Relayed signals dropped because the target's send queue was full (the target was disconnected).",
            c(&self.queue_dropped_frames),
        );
        metric(
            "resumes_total",
            "counter",
            "Joins that resumed an id within its grace period.",
            c(&self.resumes),
        );
        metric(
            "grace_expired_total",
            "counter",
            "Dropped connections whose grace period ended without a resume.",
            c(&self.grace_expired),
        );
        metric(
            "origin_refused_total",
            "counter",
            "WebSocket upgrades refused for their Origin.",
            c(&self.origin_refused),
        );
        metric(
            "queued_bytes",
            "gauge",
            "Bytes of the server-wide send-queue memory budget reserved by peers' queues.",
            self.queued_bytes.load(Relaxed).to_string(),
        );
        metric(
            "queue_budget_refused_total",
            "counter",
            "Frames refused because the server-wide send-queue budget was spent (the target was disconnected as a slow consumer).",
            c(&self.queue_budget_refused),
        );
        metric(
            "cluster_delivered_total",
            "counter",
            "Frames this node's Redis channel brought for its peers (several nodes only).",
            c(&self.cluster_delivered),
        );
        metric(
            "cluster_gap_frames_total",
            "counter",
            "Frames fetched from peers' inboxes in Redis to fill a gap in what this node heard.",
            c(&self.cluster_gap_frames),
        );
        metric(
            "cluster_duplicates_total",
            "counter",
            "Frames this node had delivered already, dropped.",
            c(&self.cluster_duplicates),
        );
        metric(
            "cluster_reaped_total",
            "counter",
            "Peers of nodes that stopped beating, parked by this node.",
            c(&self.cluster_reaped),
        );
        metric(
            "cluster_registered_again_total",
            "counter",
            "Times this node registered its peers again after Redis lost its data.",
            c(&self.cluster_registered_again),
        );
        metric(
            "redis_errors_total",
            "counter",
            "This node's calls to Redis that failed (no answer, or an error).",
            c(&self.redis_errors),
        );
        let _ = writeln!(
            out,
            "# HELP politely_redis_call_seconds This node's calls to Redis (scripts and commands), answered or failed."
        );
        let _ = writeln!(out, "# TYPE politely_redis_call_seconds summary");
        let _ = writeln!(
            out,
            "politely_redis_call_seconds_sum {}",
            self.redis_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "politely_redis_call_seconds_count {}",
            self.redis_calls.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP politely_connections_refused_total TCP connections refused at accept, by the limit they hit."
        );
        let _ = writeln!(out, "# TYPE politely_connections_refused_total counter");
        for (limit, n) in [
            ("total", &self.refused_total),
            ("per-address", &self.refused_address),
        ] {
            let _ = writeln!(
                out,
                "politely_connections_refused_total{{limit=\"{limit}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP politely_errors_total Error frames sent, by code."
        );
        let _ = writeln!(out, "# TYPE politely_errors_total counter");
        for (code, n) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "politely_errors_total{{code=\"{code}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP politely_closes_total Connections the server closed, by close code."
        );
        let _ = writeln!(out, "# TYPE politely_closes_total counter");
        for (code, n) in CloseCode::ALL.iter().zip(&self.closes) {
            let _ = writeln!(
                out,
                "politely_closes_total{{code=\"{}\",reason=\"{}\"}} {}",
                code.code(),
                code.reason(),
                n.load(Relaxed)
            );
        }
        out
    }
}
