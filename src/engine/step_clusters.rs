//! Every cluster a playbook talks to besides the default one (`--kubeconfig`, `--context`):
//! one per `context:` its steps name, each connected and checked before the first step, so
//! that a context the kubeconfig lacks is invalid input before anything runs.

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::kube::Cluster;
use crate::playbook::{Playbook, Scopes};
use crate::render::{Masker, Renderer};

/// The clusters of the contexts a playbook's steps name, and which step talks to which.
#[derive(Default)]
pub(super) struct StepClusters {
    /// Each named context's cluster, with the renderer whose lookups read it.
    named: BTreeMap<String, (Cluster, Renderer)>,
    /// Each step's rendered context, by step index (empty when no step names one).
    of_step: Vec<Option<String>>,
}

impl StepClusters {
    /// Renders every step's `context:` with the params and vars and connects to each
    /// context once, from the kubeconfig of `default`.
    pub async fn connect(
        playbook: &Playbook,
        vars: &Scopes,
        masker: &Masker,
        default: Option<&Cluster>,
    ) -> Result<Self, Diagnostic> {
        if playbook.steps.iter().all(|step| step.context.is_none()) {
            return Ok(Self::default());
        }
        let renderer = Renderer::new(masker.clone());
        let mut clusters = StepClusters::default();
        for step in &playbook.steps {
            let Some((written, location)) = &step.context else {
                clusters.of_step.push(None);
                continue;
            };
            // An included step whose include is skipped talks to no cluster.
            if vars.skipped(step.context_scope).is_some() {
                clusters.of_step.push(None);
                continue;
            }
            let vars = vars.of(step.context_scope);
            let id = step.id();
            let name = renderer.render_string(written, vars).map_err(|error| {
                Diagnostic::at(
                    location.clone(),
                    format!("step `{id}`: `context:` does not render: {}", error.message),
                )
                .help("a context may use params and vars")
            })?;
            let name = name.trim().to_string();
            if !clusters.named.contains_key(&name) {
                let default = default.ok_or_else(|| {
                    Diagnostic::at(
                        location.clone(),
                        format!("step `{id}` names context `{name}`, and there is no kubeconfig"),
                    )
                    .help("pass --kubeconfig (or set KUBECONFIG)")
                })?;
                let cluster = default.in_context(&name).await.map_err(|error| {
                    let mut diagnostic = Diagnostic::at(
                        location.clone(),
                        format!("step `{id}`: {}", masker.mask(&error.message)),
                    );
                    diagnostic.help = error.help;
                    diagnostic
                })?;
                let lookups = Renderer::with_cluster(masker.clone(), Some(cluster.clone()));
                clusters.named.insert(name.clone(), (cluster, lookups));
            }
            clusters.of_step.push(Some(name));
        }
        Ok(clusters)
    }

    /// Each named context's cluster whose API server is not `default`'s nor an earlier
    /// one's: the clusters a run locks besides the default one.
    pub fn other_clusters(&self, default: &Cluster) -> Vec<(&str, &Cluster)> {
        let mut servers = vec![default.server()];
        let mut others = Vec::new();
        for (name, (cluster, _)) in &self.named {
            if !servers.contains(&cluster.server()) {
                servers.push(cluster.server());
                others.push((name.as_str(), cluster));
            }
        }
        others
    }

    /// The context step `index` names, rendered.
    pub fn context(&self, index: usize) -> Option<&str> {
        self.of_step.get(index)?.as_deref()
    }

    /// The cluster of the context step `index` names, with the renderer whose lookups read
    /// it; `None` for a step of the default cluster.
    pub fn for_step(&self, index: usize) -> Option<&(Cluster, Renderer)> {
        self.named.get(self.context(index)?)
    }
}
