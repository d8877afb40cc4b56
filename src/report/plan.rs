//! A plan as text (terminal), JSON (tools) or Markdown (a pull-request comment).

use crate::engine::plan_report::{PlanDecision, PlanReport};
use crate::engine::saved_plan::SavedPlan;
use crate::kube::readings::Reading;

impl PlanDecision {
    fn label(self) -> &'static str {
        match self {
            PlanDecision::Run => "run",
            PlanDecision::Skip => "skip",
            PlanDecision::Unknown => "unknown",
            PlanDecision::Refused => "refused",
            PlanDecision::Rescue => "rescue",
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
        let counts = format!(
            "{} to run, {} to skip, {} unknown, {} refused",
            count(PlanDecision::Run),
            count(PlanDecision::Skip),
            count(PlanDecision::Unknown),
            count(PlanDecision::Refused)
        );
        match count(PlanDecision::Rescue) {
            0 => counts,
            rescue => format!("{counts}, {rescue} to rescue a failed block"),
        }
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
            if let Some(part) = &entry.part {
                text.push_str(&format!("[{part}] "));
            }
            if let Some(context) = &entry.context {
                text.push_str(&format!("[context {context}] "));
            }
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
        if let Some(window) = &self.window {
            text.push_str(&window.to_text());
        }
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
            let part = entry
                .part
                .as_ref()
                .map(|part| format!(" ({part})"))
                .unwrap_or_default();
            let context = entry
                .context
                .as_ref()
                .map(|context| format!(" in context `{}`", escape(context)))
                .unwrap_or_default();
            text.push_str(&format!(
                "| {} | `{}`{part}{context} | `{}` | **{}** | {} |\n",
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
        if let Some(window) = &self.window {
            text.push_str(&window.to_markdown());
        }
        text
    }
}

impl SavedPlan {
    /// For a pull request: the plan as `plan --format markdown` shows it, and what the plan
    /// was made from and on what grounds (what each step's decision read).
    pub fn to_markdown(&self) -> String {
        let mut text = self.report().to_markdown();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(text) => format!("`{name}={text}`"),
                other => format!("`{name}={other}`"),
            })
            .collect();
        let params = if params.is_empty() {
            "no params".to_string()
        } else {
            params.join(", ")
        };
        text.push_str(&format!(
            "\nSaved plan of `{}` (sha256 `{}`), made {}, with {params} (secret params are not recorded); the run's journal had {} events.\n`runbook run {} --plan FILE` runs exactly this plan, and stops before a step (exit 6) when what its decision read has changed since.\n",
            self.playbook.path,
            short(&self.playbook.sha256),
            self.created,
            self.journal_position,
            self.playbook.path,
        ));
        let read: Vec<String> = self
            .steps
            .iter()
            .filter(|step| !step.readings.is_empty())
            .map(|step| {
                let readings: Vec<String> = step.readings.iter().map(reading_label).collect();
                format!("- `{}`: {}", step.entry.id, readings.join("; "))
            })
            .collect();
        if !read.is_empty() {
            text.push_str(&format!(
                "\n<details><summary>What the decisions read</summary>\n\n{}\n</details>\n",
                read.join("\n")
            ));
        }
        text
    }
}

/// The first 12 hex digits of a hash.
fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// `PersistentVolume staging-home-nfs (resourceVersion 12)`, `file hub.values.yaml (sha256 …)`.
fn reading_label(reading: &Reading) -> String {
    match reading {
        Reading::Object(object) => match (&object.content, &object.resource_version) {
            (None, _) => format!("{} (absent)", object.label()),
            (Some(_), Some(version)) => format!("{} (resourceVersion {version})", object.label()),
            (Some(_), None) => object.label(),
        },
        Reading::List(list) => {
            let count = list.items.len();
            let noun = if count == 1 { "object" } else { "objects" };
            format!("{} ({count} {noun})", list.label())
        }
        Reading::File(file) => match &file.sha256 {
            Some(hash) => format!("file {} (sha256 {})", file.path, short(hash)),
            None => format!("file {} (unreadable)", file.path),
        },
    }
}
