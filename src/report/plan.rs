//! A plan as text (terminal), JSON (tools) or Markdown (a pull-request comment).

use serde::Serialize;

/// What `run` would do with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

impl PlanDecision {
    fn label(self) -> &'static str {
        match self {
            PlanDecision::Run => "run",
            PlanDecision::Skip => "skip",
            PlanDecision::Unknown => "unknown",
            PlanDecision::Refused => "refused",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    /// Step id.
    pub id: String,
    /// Step name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Action key.
    pub action: String,
    /// What would happen.
    pub decision: PlanDecision,
    /// Why.
    pub reason: String,
    /// What the action would do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The change to an object or a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
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
}

impl PlanReport {
    fn counts(&self) -> String {
        let count = |decision| {
            self.steps
                .iter()
                .filter(|entry| entry.decision == decision)
                .count()
        };
        format!(
            "{} to run, {} to skip, {} unknown, {} refused",
            count(PlanDecision::Run),
            count(PlanDecision::Skip),
            count(PlanDecision::Unknown),
            count(PlanDecision::Refused)
        )
    }

    /// For a terminal.
    pub fn to_text(&self) -> String {
        let width = self
            .steps
            .iter()
            .map(|entry| entry.id.len())
            .max()
            .unwrap_or(0);
        let count = self.steps.len();
        let noun = if count == 1 { "step" } else { "steps" };
        let mut text = format!(
            "plan for {} (run {}, {count} {noun})\n",
            self.playbook, self.run
        );
        for entry in &self.steps {
            text.push_str(&format!(
                "  {:<8} {:<width$}  ",
                entry.decision.label(),
                entry.id
            ));
            match &entry.summary {
                Some(summary) => text.push_str(&format!("{summary} ({})\n", entry.reason)),
                None => text.push_str(&format!("{}\n", entry.reason)),
            }
            if let Some(diff) = &entry.diff {
                for line in diff.lines() {
                    text.push_str(&format!("  {:<8} {:<width$}    {line}\n", "", ""));
                }
            }
        }
        text.push_str(&self.counts());
        text.push('\n');
        text
    }

    /// One JSON object with a `steps` array.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// For a pull-request comment.
    pub fn to_markdown(&self) -> String {
        let escape = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        let mut text = format!(
            "### Plan: `{}`\n\nRun `{}`: {}.\n\n| # | Step | Action | Decision | Why |\n| --- | --- | --- | --- | --- |\n",
            self.name,
            self.run,
            self.counts()
        );
        for (index, entry) in self.steps.iter().enumerate() {
            let what = match &entry.summary {
                Some(summary) => format!("{} ({})", escape(summary), escape(&entry.reason)),
                None => escape(&entry.reason),
            };
            text.push_str(&format!(
                "| {} | `{}` | `{}` | **{}** | {} |\n",
                index + 1,
                entry.id,
                entry.action,
                entry.decision.label(),
                what
            ));
        }
        for entry in self.steps.iter().filter(|entry| entry.diff.is_some()) {
            text.push_str(&format!(
                "\n<details><summary><code>{}</code> changes</summary>\n\n```diff\n{}\n```\n</details>\n",
                entry.id,
                entry.diff.as_deref().unwrap_or_default().trim_end()
            ));
        }
        text
    }
}
