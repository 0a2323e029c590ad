//! Result tables (and JSON): one column per server, one row per metric, with the issue's
//! target beside the metrics that have one.

use serde::Serialize;

/// A target a metric should meet.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// The value should be at most this.
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtMost(max) => value <= max,
        }
    }
}

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// What it is.
    pub name: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// The value.
    pub value: f64,
    /// The target for tidings, if the issue sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
}

impl Metric {
    /// A metric without a target.
    pub fn new(name: &'static str, unit: &'static str, value: f64) -> Self {
        Self {
            name,
            unit,
            value,
            goal: None,
        }
    }

    /// A metric with a target.
    pub fn with_goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }
}

/// The result of one scenario against one server.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The server's name (`tidings`, `node-ws`, or the `--name` of an attached server).
    pub server: String,
    /// Measured values.
    pub metrics: Vec<Metric>,
    /// Errors seen during the run (failed connections, unexpected closes, failed publishes).
    pub errors: u64,
    /// The first few error texts.
    pub error_samples: Vec<String>,
    /// Units of work done (connections, deliveries, handshakes); 0 means the run measured nothing.
    pub work: u64,
}

impl Run {
    /// Whether the run did work and saw no error (what the smoke test checks).
    pub fn ok(&self) -> bool {
        self.errors == 0 && self.work > 0
    }
}

/// A scenario's results against every server it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Its parameters, as `name=value` text.
    pub params: String,
    /// One run per server.
    pub runs: Vec<Run>,
}

impl Report {
    /// The result table as text.
    pub fn table(&self) -> String {
        let mut out = format!("== {} ({}) ==\n", self.scenario, self.params);
        let mut header = format!("{:<40}", "metric");
        for run in &self.runs {
            header.push_str(&format!("{:>16}", run.server));
        }
        header.push_str("   target");
        out.push_str(&header);
        out.push('\n');
        let Some(first) = self.runs.first() else {
            return out;
        };
        for (i, metric) in first.metrics.iter().enumerate() {
            let mut line = format!("{:<40}", format!("{} [{}]", metric.name, metric.unit));
            for run in &self.runs {
                let cell = run
                    .metrics
                    .get(i)
                    .map_or(String::from("-"), |m| fmt(m.value));
                line.push_str(&format!("{cell:>16}"));
            }
            if let Some(goal) = metric.goal {
                let Goal::AtMost(max) = goal;
                line.push_str(&format!("   <= {}", fmt(max)));
                for run in &self.runs {
                    if let Some(m) = run.metrics.get(i) {
                        let verdict = if goal.met(m.value) { "met" } else { "NOT met" };
                        line.push_str(&format!(" ({}: {verdict})", run.server));
                    }
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        let mut line = format!("{:<40}", "errors");
        for run in &self.runs {
            line.push_str(&format!("{:>16}", run.errors));
        }
        out.push_str(&line);
        out.push('\n');
        for run in &self.runs {
            for e in &run.error_samples {
                out.push_str(&format!("  {}: {e}\n", run.server));
            }
        }
        out
    }

    /// Whether every run did work without errors.
    pub fn ok(&self) -> bool {
        self.runs.iter().all(Run::ok)
    }
}

/// Numbers with a sensible number of digits.
fn fmt(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_verdicts() {
        let run = |server: &str, v: f64| Run {
            server: server.to_owned(),
            metrics: vec![Metric::new("cpu", "µs", v).with_goal(Goal::AtMost(1.5))],
            errors: 0,
            error_samples: vec![],
            work: 10,
        };
        let report = Report {
            scenario: "fanout",
            params: "x=1".to_owned(),
            runs: vec![run("tidings", 1.2), run("node-ws", 9.0)],
        };
        let table = report.table();
        assert!(table.contains("tidings: met"), "{table}");
        assert!(table.contains("node-ws: NOT met"), "{table}");
        assert!(report.ok());
    }
}
