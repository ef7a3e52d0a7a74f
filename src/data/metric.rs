//! The metrics a task reports, by name. Computing them is
//! `crate::train::metrics`; the names live here, with the task definitions
//! that choose them.

use serde::{Deserialize, Serialize};

use crate::data::GlueTask;

/// A reported metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    /// Binary F1 of class 1.
    F1,
    /// Matthews correlation coefficient.
    Mcc,
    Pearson,
    Spearman,
    /// SQuAD exact match.
    ExactMatch,
    /// SQuAD token F1.
    SquadF1,
}

impl Metric {
    /// Name used in logs (`accuracy`, `f1`, `mcc`, `pearson`, `spearman`,
    /// `exact_match`, `squad_f1`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::Mcc => "mcc",
            Metric::Pearson => "pearson",
            Metric::Spearman => "spearman",
            Metric::ExactMatch => "exact_match",
            Metric::SquadF1 => "squad_f1",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The metrics a GLUE task reports (first = the main one).
pub fn glue_metrics(task: GlueTask) -> &'static [Metric] {
    match task {
        GlueTask::Cola => &[Metric::Mcc],
        GlueTask::Mrpc | GlueTask::Qqp => &[Metric::F1, Metric::Accuracy],
        GlueTask::Stsb => &[Metric::Pearson, Metric::Spearman],
        _ => &[Metric::Accuracy],
    }
}
