//! A plan as data: what `run` would do with each step. `report` renders it for a terminal,
//! for tools (JSON) and for a pull request (Markdown).

use serde::{Deserialize, Serialize};

use crate::kube::readings::Reading;

/// What `run` would do with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanDecision {
    /// The action would run.
    Run,
    /// Already done, or not applicable.
    Skip,
    /// Depends on a step that has not run.
    Unknown,
    /// The guard is false: the run would stop here.
    Refused,
    /// A step of a block's `rescue:`: it runs only if a step of the block fails.
    Rescue,
}

/// One step of a plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanEntry {
    /// Step id.
    pub id: String,
    /// Step name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Action key.
    pub action: String,
    /// The block it belongs to and its part: `block switchover`, `rescue of switchover`,
    /// `always of switchover`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// The kubeconfig context the step talks to, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// What would happen.
    pub decision: PlanDecision,
    /// Why.
    pub reason: String,
    /// What the action would do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The change to an object or a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// What the decision read (objects, files), for a saved plan; not part of the plan's
    /// JSON output, which says what would happen, not on what grounds.
    #[serde(skip)]
    pub readings: Vec<Reading>,
}

/// A whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// Run id.
    pub run: String,
    /// Playbook path.
    pub playbook: String,
    /// Playbook name.
    pub name: String,
    /// Every step, in order.
    pub steps: Vec<PlanEntry>,
    /// How many events the run's journal had when the plan was made.
    #[serde(skip)]
    pub journal_position: usize,
    /// How long the maintenance window will probably take, when the playbook has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<super::window::WindowForecast>,
}
