//! `runbook fleet plan|run|status PLAYBOOK --cluster C`: one playbook over every hub of a
//! deployer cluster. Each hub is its own run (its own journal and lock), with `--var
//! cluster=C --var hub=H`, the shared `--var`s and `--vars-file`, and the hub's own vars file
//! when it has one; hubs run in this process, `--concurrency` at a time, in the order of
//! `config/clusters/C/cluster.yaml`, sharing one cluster client (and one `--sandbox`).

mod cluster_hubs;
mod fleet_run;
mod fleet_status;
mod hub_status;
mod namespace_mark;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};

use crate::actions::RunEnvironment;
use crate::diagnostic::Diagnostic;
use crate::engine::event::RunOutput;
use crate::engine::journal::{History, read_events};
use crate::engine::lock::RunLock;
use crate::engine::{self, ClusterState, RunOptions, StateArgs, StateDir};
use crate::kube::{Cluster, ClusterOptions};
use crate::playbook::{Bound, Inputs, Playbook, read_vars_file};
use crate::report::{Format, Reporter, Verbosity};
use crate::{Error, Exit, Result};

pub use cluster_hubs::{ClusterHubs, FleetHub, HubSelection};
pub use fleet_run::{BoundHub, FleetOutcome, FleetRunOptions, HubOutcome, run_hubs};
pub use fleet_status::{FleetStatus, terminal_width};
pub use hub_status::{HubPhase, HubStatus};
pub use namespace_mark::{
    HOLDER_ANNOTATION, NamespaceMark, PHASE_LABEL, PLAYBOOK_ANNOTATION, RUN_ANNOTATION,
    SINCE_ANNOTATION, STEP_LABEL,
};

/// The fleet's subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Show what `fleet run` would do on each hub, without doing it.
    Plan {
        /// The playbook, the cluster and its hubs.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: FleetFormat,
    },
    /// Run the playbook on every hub, or resume each hub where it stopped.
    Run {
        /// The playbook, the cluster and its hubs.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Concurrency, failures, gates.
        #[command(flatten)]
        run: FleetRunArgs,
    },
    /// One line per hub: its phase, the bytes copied, the maintenance window, the last
    /// change. Exits 0 when every hub is done, 1 otherwise.
    Status {
        /// The playbook, the cluster and its hubs.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: FleetFormat,
    },
}

/// How `fleet plan` and `fleet status` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FleetFormat {
    /// A table (status) or each hub's plan (plan).
    Text,
    /// One JSON object.
    Json,
    /// Markdown, for an issue or a pull request.
    Markdown,
}

/// What every fleet command takes: the playbook, the cluster and its hubs, the params.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The playbook file.
    playbook: PathBuf,
    /// The deployer cluster: a folder of --config-dir with a cluster.yaml [default: the
    /// playbook's `cluster` param as --var, --vars-file or --sandbox give it].
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,
    /// Only this hub of cluster.yaml (repeatable) [default: every hub].
    #[arg(long = "hub", value_name = "HUB")]
    hubs: Vec<String>,
    /// Not this hub (repeatable).
    #[arg(long = "skip-hub", value_name = "HUB")]
    skip_hubs: Vec<String>,
    /// deployer's config/clusters folder [default: the playbook's `config_dir` param, else
    /// config/clusters]; given, it is also the hubs' `config_dir`.
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Where each hub's own vars file is, as DIR/CLUSTER/HUB.yaml [default: vars, or
    /// SANDBOX/vars with --sandbox].
    #[arg(long, value_name = "DIR")]
    vars_dir: Option<PathBuf>,
    /// Set a param of every hub: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// A YAML file of param values for every hub (a hub's own file wins over it).
    #[arg(long, value_name = "FILE")]
    vars_file: Option<String>,
    #[command(flatten)]
    sandbox: FleetSandboxArgs,
    /// Where each hub's run keeps its lock and journal.
    #[command(flatten)]
    state: StateArgs,
}

/// `--sandbox` for a fleet: a sandbox cluster seeded with several hubs.
#[derive(Debug, Args)]
pub struct FleetSandboxArgs {
    /// Run against a sandbox cluster on 127.0.0.1 seeded with --sandbox-hubs hubs of cluster
    /// `sandbox`; params get the sandbox's values unless --var sets them.
    #[arg(long)]
    sandbox: bool,
    /// Keep the sandbox in DIR, and continue the one there; `fleet status --sandbox-dir DIR`
    /// reads it without serving it.
    #[arg(long, value_name = "DIR")]
    sandbox_dir: Option<PathBuf>,
    /// How many hubs the sandbox seeds (of different sizes; one whose users never leave;
    /// two sharing a values file; one with its own vars file).
    #[arg(long, value_name = "N", default_value = "6", value_parser = clap::value_parser!(u16).range(1..=26))]
    sandbox_hubs: u16,
}

/// The flags of `fleet run` beyond the hubs and params.
#[derive(Debug, Args)]
pub struct FleetRunArgs {
    /// How many hubs run at a time, started in cluster.yaml's order.
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Start no more hubs once K hubs failed; running hubs stop before their next step.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    max_failures: Option<u16>,
    /// Approve every approval gate of every hub.
    #[arg(long)]
    yes: bool,
    /// Approve this step's gate on every hub (repeatable); --hub limits the hubs.
    #[arg(long, value_name = "STEP")]
    approve: Vec<String>,
    /// Text on stderr, or every hub's JSON events on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

impl FleetCommand {
    /// The sandbox to seed and serve for this command, if it asks for one: its directory
    /// (none for a temporary one) and how many hubs to seed. `fleet status` never serves
    /// one (it reads a `--sandbox-dir` while a `fleet run` may serve it).
    pub fn sandbox_to_serve(&self) -> Option<(Option<&Path>, usize)> {
        match self {
            FleetCommand::Plan { fleet, .. } | FleetCommand::Run { fleet, .. }
                if fleet.sandbox.sandbox =>
            {
                Some((
                    fleet.sandbox.sandbox_dir.as_deref(),
                    usize::from(fleet.sandbox.sandbox_hubs),
                ))
            }
            _ => None,
        }
    }

    /// The sandbox directory `fleet status` reads, if it was given one.
    pub fn sandbox_to_read(&self) -> Option<&Path> {
        match self {
            FleetCommand::Status { fleet, .. } => fleet.sandbox.sandbox_dir.as_deref(),
            _ => None,
        }
    }

    /// Whether this is `fleet run` (a temporary sandbox is kept when it did not finish).
    pub fn is_run(&self) -> bool {
        matches!(self, FleetCommand::Run { .. })
    }
}

/// A seeded sandbox as the fleet sees it.
#[derive(Debug, Clone)]
pub struct SandboxFacts {
    /// Its directory.
    pub dir: PathBuf,
    /// Where its runs' journals go unless --state-dir says otherwise.
    pub state_dir: PathBuf,
    /// The params it offers the playbook (the hub's are replaced by each hub's).
    pub params: Vec<(String, String)>,
}

/// What the command line around `fleet` says.
#[derive(Debug)]
pub struct FleetContext {
    /// --quiet, --verbose.
    pub verbosity: Verbosity,
    /// The global --state-dir, when given.
    pub state_dir: Option<PathBuf>,
    /// The sandbox, with --sandbox (or `fleet status --sandbox-dir`).
    pub sandbox: Option<SandboxFacts>,
    /// The cluster of --kubeconfig and --context (the sandbox's with --sandbox).
    pub cluster_options: ClusterOptions,
    /// The environment of the processes steps start.
    pub surroundings: RunEnvironment,
}

/// Runs a fleet command.
pub async fn run_command(command: FleetCommand, cx: &FleetContext) -> Result<Exit> {
    match command {
        FleetCommand::Plan { fleet, format } => plan_command(&fleet, format, cx).await,
        FleetCommand::Run { fleet, run } => run_fleet_command(&fleet, &run, cx).await,
        FleetCommand::Status { fleet, format } => status_command(&fleet, format, cx).await,
    }
}

/// `fleet plan`: every hub's plan, one after the other.
async fn plan_command(fleet: &FleetArgs, format: FleetFormat, cx: &FleetContext) -> Result<Exit> {
    let setup = fleet.setup(cx, true)?;
    let bound = setup.bind_all(fleet)?;
    let cluster = setup.connect(cx).await?;
    let mut plans = Vec::new();
    for hub in &bound {
        let reporter = Reporter::new(Format::Text, cx.verbosity).labelled(&hub.name);
        if let (Some(shared), Some(cluster)) = (&setup.shared, &cluster) {
            let run = engine::run_id(&setup.playbook, &hub.bound.params);
            shared.refresh_run(cluster, &setup.state, &run).await?;
        }
        let plan = engine::plan(
            &setup.playbook,
            &hub.bound,
            &setup.state,
            &reporter,
            cluster.as_ref(),
            &cx.surroundings,
        )
        .await?;
        plans.push((hub.name.clone(), plan));
    }
    crate::report::print_out(&setup.plans_text(&plans, format));
    Ok(Exit::Success)
}

/// `fleet run`: every hub, `--concurrency` at a time, then the fleet's table on stderr.
async fn run_fleet_command(
    fleet: &FleetArgs,
    run: &FleetRunArgs,
    cx: &FleetContext,
) -> Result<Exit> {
    let setup = fleet.setup(cx, true)?;
    for step in &run.approve {
        setup.check_step_exists(step)?;
    }
    let bound = setup.bind_all(fleet)?;
    let cluster = setup.connect(cx).await?;
    let options = FleetRunOptions {
        concurrency: usize::from(run.concurrency),
        max_failures: run.max_failures.map(usize::from),
        run: RunOptions {
            yes: run.yes,
            approve: run.approve.clone(),
            surroundings: cx.surroundings.clone(),
            cluster_state: setup.shared.clone(),
            never_ask: true,
            ..RunOptions::default()
        },
    };
    let (format, verbosity) = (run.format, cx.verbosity);
    let reporter_of = move |hub: &str| -> Arc<dyn RunOutput> {
        Arc::new(Reporter::new(format, verbosity).labelled(hub))
    };
    let outcome = run_hubs(
        setup.playbook.clone(),
        bound,
        &setup.state,
        &options,
        &reporter_of,
        cluster.as_ref(),
    )
    .await?;
    let exit = outcome.exit();
    if verbosity != Verbosity::Quiet {
        let status = setup.status(cluster.as_ref()).await?;
        let mut text = status.to_text(terminal_width(), false);
        text.push_str(&hubs_that_did_not_run(&outcome));
        eprint!("fleet:\n{text}");
        eprintln!("fleet: exit {} ({})", exit.code(), exit_words(exit));
    }
    Ok(exit)
}

/// One line for each hub whose run ended in an error or did not start, and why.
fn hubs_that_did_not_run(outcome: &FleetOutcome) -> String {
    let mut text = String::new();
    for (hub, hub_outcome) in &outcome.hubs {
        match hub_outcome {
            HubOutcome::Error(code, message) => {
                text.push_str(&format!("{hub}: {message} (exit {})\n", code.code()))
            }
            HubOutcome::NotStarted if outcome.interrupted => {
                text.push_str(&format!("{hub}: not started (interrupted)\n"));
            }
            HubOutcome::NotStarted => {
                text.push_str(&format!("{hub}: not started (--max-failures reached)\n"))
            }
            HubOutcome::Ran(_) => {}
        }
    }
    text
}

/// `fleet status`: one line per hub; exit 0 when every hub is done.
async fn status_command(fleet: &FleetArgs, format: FleetFormat, cx: &FleetContext) -> Result<Exit> {
    let setup = fleet.setup(cx, false)?;
    let cluster = match &setup.shared {
        Some(_) => Some(Cluster::connect(&cx.cluster_options).await?),
        None => None,
    };
    let status = setup.status(cluster.as_ref()).await?;
    use std::io::IsTerminal;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match format {
        FleetFormat::Text => crate::report::print_out(&status.to_text(terminal_width(), color)),
        FleetFormat::Json => crate::report::print_out(&format!("{}\n", status.to_json())),
        FleetFormat::Markdown => crate::report::print_out(&status.to_markdown()),
    }
    Ok(if status.all_done() {
        Exit::Success
    } else {
        Exit::StepFailed
    })
}

/// What a fleet's exit says, in words.
fn exit_words(exit: Exit) -> &'static str {
    match exit {
        Exit::Success => "every hub is done",
        Exit::StepFailed => "a hub failed; `fleet run` again resumes each hub",
        Exit::InvalidInput => "a hub's input is invalid",
        Exit::Refused => "a guard refused a step on a hub",
        Exit::Locked => "another run holds a hub",
        Exit::Paused => "hubs wait at an approval gate; go on with --approve STEP or --yes",
        Exit::Interrupted => "interrupted; `fleet run` again continues each hub",
        Exit::PlanChanged => "a hub's saved plan no longer holds; make a new plan",
    }
}

/// A fleet command's playbook, cluster, hubs and state, checked.
struct FleetSetup {
    playbook: Arc<Playbook>,
    hubs: ClusterHubs,
    state: StateDir,
    shared: Option<ClusterState>,
    /// The sandbox's params.
    defaults: Vec<(String, String)>,
}

impl FleetArgs {
    /// Loads and checks everything before a hub starts: the playbook, cluster.yaml, the
    /// selection, the vars directory, the state flags. `serves` is false for `status`.
    fn setup(&self, cx: &FleetContext, serves: bool) -> Result<FleetSetup> {
        self.check_sandbox_flags(serves)?;
        let playbook = Playbook::load(&self.playbook)?;
        self.check_hub_params(&playbook)?;
        let defaults = cx
            .sandbox
            .as_ref()
            .map(|sandbox| sandbox.params.clone())
            .unwrap_or_default();
        let shared_values = SharedValues {
            flags: &self.vars,
            file: match &self.vars_file {
                Some(file) => read_vars_file(file)?,
                None => Default::default(),
            },
            sandbox: &defaults,
            playbook: &playbook,
        };
        let cluster = self
            .cluster
            .clone()
            .or_else(|| shared_values.get("cluster"))
            .ok_or_else(|| {
                Diagnostic::new("--cluster is required: which cluster's hubs to work on")
                    .help("give --cluster C, C a folder of deployer's config/clusters")
            })?;
        let config_dir = self
            .config_dir
            .clone()
            .or_else(|| shared_values.get("config_dir").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config/clusters"));
        let sandbox_dir = cx
            .sandbox
            .as_ref()
            .map(|sandbox| sandbox.dir.clone())
            .or_else(|| self.sandbox.sandbox_dir.clone());
        let vars_dir = self
            .vars_dir
            .clone()
            .or_else(|| sandbox_dir.as_ref().map(|dir| dir.join("vars")))
            .unwrap_or_else(|| PathBuf::from("vars"));
        let selection = HubSelection {
            only: self.hubs.clone(),
            skip: self.skip_hubs.clone(),
        };
        let hubs = ClusterHubs::load(&config_dir, &cluster, &selection, &vars_dir)?;
        let local = cx
            .state_dir
            .clone()
            .or_else(|| cx.sandbox.as_ref().map(|sandbox| sandbox.state_dir.clone()))
            .or_else(|| sandbox_dir.map(|dir| dir.join("state")))
            .unwrap_or_else(|| PathBuf::from(".runbook"));
        let shared = self.state.cluster_state()?;
        // With --state cluster, the state directory keeps a cache of the cluster's journals.
        let state = match &shared {
            Some(shared) => StateDir::new(local.join("cluster").join(&shared.namespace)),
            None => StateDir::new(local),
        };
        Ok(FleetSetup {
            playbook: Arc::new(playbook),
            hubs,
            state,
            shared,
            defaults,
        })
    }

    /// `--sandbox-dir` serves only with `--sandbox`; `status` reads one, so it needs it.
    fn check_sandbox_flags(&self, serves: bool) -> Result<()> {
        if serves && self.sandbox.sandbox_dir.is_some() && !self.sandbox.sandbox {
            return Err(Diagnostic::new("--sandbox-dir needs --sandbox here")
                .help("add --sandbox to run against the sandbox in that directory")
                .into());
        }
        if !serves && self.sandbox.sandbox && self.sandbox.sandbox_dir.is_none() {
            return Err(Diagnostic::new("fleet status --sandbox needs --sandbox-dir")
                .help("give the --sandbox-dir of the fleet run; status reads it without serving it")
                .into());
        }
        Ok(())
    }

    /// The playbook takes `cluster` and `hub` params, and no `--var` sets them: the fleet
    /// gives each hub its own.
    fn check_hub_params(&self, playbook: &Playbook) -> Result<()> {
        for param in ["cluster", "hub"] {
            if !playbook.params.contains_key(param) {
                return Err(Diagnostic::new(format!(
                    "{} declares no `{param}` param: a fleet runs it once per hub with --var cluster=C --var hub=H",
                    playbook.path.display()
                ))
                .help("declare `cluster` and `hub` params, or use `runbook run`")
                .into());
            }
            if let Some(var) = self
                .vars
                .iter()
                .find(|var| var.starts_with(&format!("{param}=")))
            {
                return Err(Diagnostic::new(format!(
                    "--var {var}: a fleet gives each hub its `{param}`"
                ))
                .help("name the cluster with --cluster, and hubs with --hub or --skip-hub")
                .into());
            }
        }
        Ok(())
    }
}

/// The values every hub shares, before a hub's own: to find the cluster and the config
/// directory when no flag names them.
struct SharedValues<'a> {
    /// `--var NAME=VALUE`, the last one winning.
    flags: &'a [String],
    /// `--vars-file`.
    file: indexmap::IndexMap<String, crate::playbook::GivenValue>,
    /// The sandbox's params.
    sandbox: &'a [(String, String)],
    /// The params' defaults.
    playbook: &'a Playbook,
}

impl SharedValues<'_> {
    /// What the playbook's param `name` gets from the flags, the file, the sandbox or its
    /// default, in that order.
    fn get(&self, name: &str) -> Option<String> {
        let text = |value: &serde_json::Value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let flag = self
            .flags
            .iter()
            .rev()
            .find_map(|var| var.strip_prefix(&format!("{name}=")));
        flag.map(str::to_string)
            .or_else(|| self.file.get(name).map(|given| text(&given.value)))
            .or_else(|| {
                self.sandbox
                    .iter()
                    .find(|(param, _)| param == name)
                    .map(|(_, value)| value.clone())
            })
            .or_else(|| {
                let (spec, _) = self.playbook.params.get(name)?;
                spec.default.as_ref().map(|default| text(&default.value))
            })
    }
}

impl FleetSetup {
    /// `--approve STEP` names a step of the playbook.
    fn check_step_exists(&self, step: &str) -> Result<()> {
        if self.playbook.step(step).is_some() {
            return Ok(());
        }
        let ids: Vec<&str> = self.playbook.steps.iter().map(|s| s.id()).collect();
        let help = match crate::diagnostic::did_you_mean(step, &ids) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("the steps are: {}", ids.join(", ")),
        };
        Err(Diagnostic::new(format!(
            "--approve {step}: no step has this id in {}",
            self.playbook.path.display()
        ))
        .help(help)
        .into())
    }

    /// Binds every hub's params (nothing runs before every hub's are valid).
    fn bind_all(&self, args: &FleetArgs) -> Result<Vec<BoundHub>> {
        self.hubs
            .hubs
            .iter()
            .map(|hub| {
                let bound = self.bind(args, hub).map_err(|mut diagnostic| {
                    diagnostic.message = format!("hub `{}`: {}", hub.name, diagnostic.message);
                    Error::from(diagnostic)
                })?;
                Ok(BoundHub {
                    name: hub.name.clone(),
                    bound: Arc::new(bound),
                })
            })
            .collect()
    }

    /// One hub's params: the sandbox's, the shared file, the hub's own file, the shared
    /// flags, then its cluster and name (and `--config-dir` when given).
    fn bind(&self, args: &FleetArgs, hub: &FleetHub) -> std::result::Result<Bound, Diagnostic> {
        let mut vars = args.vars.clone();
        vars.push(format!("cluster={}", self.hubs.cluster));
        vars.push(format!("hub={}", hub.name));
        if let Some(dir) = &args.config_dir
            && self.playbook.params.contains_key("config_dir")
        {
            vars.push(format!("config_dir={}", dir.display()));
        }
        let inputs = Inputs {
            vars,
            vars_file: args.vars_file.clone(),
            defaults: self.defaults.clone(),
        };
        let own = hub
            .vars_file
            .as_ref()
            .map(|file| file.display().to_string());
        self.playbook.bind_with(&inputs, own.as_deref())
    }

    /// The cluster, when the playbook talks to one or the runs are kept there.
    async fn connect(&self, cx: &FleetContext) -> Result<Option<Cluster>> {
        if !self.playbook.uses_kube() && self.shared.is_none() {
            return Ok(None);
        }
        Ok(Some(Cluster::connect(&cx.cluster_options).await?))
    }

    /// Where each hub stands: the most recently active run of the playbook whose `cluster`
    /// and `hub` params are the hub's (with --state cluster, the cluster's runs).
    async fn status(&self, cluster: Option<&Cluster>) -> Result<FleetStatus> {
        let runs = match (&self.shared, cluster) {
            (Some(shared), Some(cluster)) => shared.refresh_cache(cluster, &self.state).await?,
            _ => self.state.runs()?,
        };
        let mut found: HashMap<String, (String, History)> = HashMap::new();
        for run in runs {
            let history = History::load(&self.state.run_dir(&run))?;
            let Some((_, name, params)) = history.identity() else {
                continue;
            };
            if name != self.playbook.name || params["cluster"] != self.hubs.cluster.as_str() {
                continue;
            }
            let Some(hub) = params["hub"].as_str().map(str::to_string) else {
                continue;
            };
            // Most recently active first: the first run found for a hub is its current one.
            found.entry(hub).or_insert((run, history));
        }
        let now = jiff::Timestamp::now();
        let mut hubs = Vec::new();
        for hub in &self.hubs.hubs {
            hubs.push(match found.get(&hub.name) {
                Some((run, history)) => {
                    let run_dir = self.state.run_dir(run);
                    let held = match (&self.shared, cluster) {
                        (Some(shared), Some(cluster)) => shared.holder(cluster, run).await?,
                        _ => RunLock::holder(&run_dir),
                    }
                    .is_some();
                    let (events, _) = read_events(&run_dir)?;
                    HubStatus::from_journal(
                        &hub.name,
                        run,
                        held,
                        history,
                        &events,
                        &self.playbook,
                        now,
                    )
                }
                None => HubStatus::not_started(&hub.name),
            });
        }
        Ok(FleetStatus {
            playbook: self.playbook.name.clone(),
            cluster: self.hubs.cluster.clone(),
            hubs,
        })
    }

    /// Every hub's plan, in `format`.
    fn plans_text(
        &self,
        plans: &[(String, crate::report::PlanReport)],
        format: FleetFormat,
    ) -> String {
        match format {
            FleetFormat::Text => plans
                .iter()
                .map(|(hub, plan)| format!("== hub {hub} ==\n{}", plan.to_text()))
                .collect::<Vec<_>>()
                .join("\n"),
            FleetFormat::Json => {
                let hubs: Vec<serde_json::Value> = plans
                    .iter()
                    .map(|(hub, plan)| {
                        serde_json::json!({
                            "hub": hub,
                            "plan": serde_json::from_str::<serde_json::Value>(&plan.to_json())
                                .unwrap_or_default(),
                        })
                    })
                    .collect();
                let all = serde_json::json!({
                    "playbook": self.playbook.name,
                    "cluster": self.hubs.cluster,
                    "hubs": hubs,
                });
                serde_json::to_string_pretty(&all).unwrap_or_default() + "\n"
            }
            FleetFormat::Markdown => {
                let mut text = format!(
                    "## Fleet plan: `{}` on cluster `{}`\n\n",
                    self.playbook.name, self.hubs.cluster
                );
                for (hub, plan) in plans {
                    text.push_str(&format!("#### Hub `{hub}`\n\n{}\n", plan.to_markdown()));
                }
                text
            }
        }
    }
}
