//! A plan as text (terminal), JSON (tools) or Markdown (a pull-request comment).

use crate::engine::plan_report::{PlanDecision, PlanReport};

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
