//! `--json FILE`: the samples a benchmark measured, written for `scripts/plot.mjs` to draw
//! (one file per run; the plot reads several and compares them).

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `--json` option shared by the benchmarks that time things one by one.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct JsonArg {
    /// Also write every sample (milliseconds) to this file as JSON, for
    /// `node scripts/plot.mjs` to draw.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// What one run measured: named series of durations, with the command that measured them.
#[derive(Debug, Serialize)]
pub(crate) struct Samples {
    bench: &'static str,
    /// The command line, so that a plot can say how to measure it again.
    command: String,
    /// Seconds since the Unix epoch when the run ended.
    at: u64,
    series: Vec<Series>,
}

#[derive(Debug, Serialize)]
struct Series {
    name: String,
    unit: &'static str,
    /// A phase of the run's whole (its series add up to it, sample by sample), not a
    /// measure of its own: `plot.mjs --phases` draws these as stacked bars.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    phase: bool,
    samples: Vec<f64>,
}

impl Samples {
    pub(crate) fn new(bench: &'static str) -> Self {
        let command = std::env::args()
            .map(|arg| {
                let plain = arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=".contains(c));
                if plain { arg } else { format!("'{arg}'") }
            })
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            bench,
            command,
            at: 0,
            series: Vec::new(),
        }
    }

    /// Adds a series, in the order measured (not sorted: a plot may show drift over a run).
    pub(crate) fn add(&mut self, name: impl Into<String>, times: &[Duration]) {
        self.push(name.into(), false, times);
    }

    /// Adds a phase of the series added before (see [`Series::phase`]).
    pub(crate) fn add_phase(&mut self, name: impl Into<String>, times: &[Duration]) {
        self.push(name.into(), true, times);
    }

    fn push(&mut self, name: String, phase: bool, times: &[Duration]) {
        self.series.push(Series {
            name,
            unit: "ms",
            phase,
            samples: times
                .iter()
                .map(|t| round3(t.as_secs_f64() * 1e3))
                .collect(),
        });
    }

    /// Writes the file when `--json` was given.
    pub(crate) fn write(mut self, arg: &JsonArg) -> anyhow::Result<()> {
        let Some(path) = &arg.json else {
            return Ok(());
        };
        self.at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        write_json(path, &self)
    }
}

fn write_json(path: &Path, samples: &Samples) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = serde_json::to_string_pretty(samples)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Microsecond precision is all a loopback timing carries; it keeps the files small.
fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}
