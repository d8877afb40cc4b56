//! The `runbook` command line: turns flags into a call and the result into an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use runbook::actions::RunEnvironment;
use runbook::engine::journal::History;
use runbook::engine::lock::{Acquired, RunLock};
use runbook::engine::saved_plan::SavedPlan;
use runbook::engine::{self, ClusterState, PlanFile, RunOptions, StateArgs, StateDir};
use runbook::kube::{Cluster, ClusterOptions};
use runbook::playbook::{Inputs, Playbook};
use runbook::report::{self, Format, Reporter, Verbosity};
use runbook::sandbox::session::SandboxSession;
use runbook::{Diagnostic, Error, Exit};

/// Run maintenance procedures written as YAML playbooks: step by step, resumable, with
/// honest plans and approval gates.
#[derive(Debug, Parser)]
#[command(name = "runbook", version, about, max_term_width = 100)]
struct Cli {
    /// Where runs keep their journal and lock [default: .runbook, or DIR/state with
    /// --sandbox-dir DIR]
    #[arg(long, global = true, env = "RUNBOOK_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Only failures, pauses and the final line.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also show the output of check commands.
    #[arg(long, short, global = true)]
    verbose: bool,
    /// The kubeconfig for `kube.*` steps (default: KUBECONFIG, then ~/.kube/config, then
    /// the in-cluster service account).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig other than its current one.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// A duration flag such as `24h` or `30m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    runbook::syntax::HumanDuration::parse(text).map(|duration| duration.0)
}

#[derive(Debug, Args)]
struct PlaybookArgs {
    /// The playbook file.
    playbook: PathBuf,
    /// Set a param: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// A YAML file of param values.
    #[arg(long, value_name = "FILE")]
    vars_file: Option<String>,
}

/// `--sandbox`: the run talks to a sandbox cluster seeded with a hub, not to a real cluster.
#[derive(Debug, Args)]
struct SandboxArgs {
    /// Run against a sandbox cluster on 127.0.0.1 seeded with a hub to migrate (its objects,
    /// NFS exports as local directories, a deployer configuration); params the playbook
    /// declares get the sandbox's values unless --var sets them.
    #[arg(long)]
    sandbox: bool,
    /// Keep the sandbox in DIR, and continue the one there [default: a new temporary
    /// directory, removed after a successful run].
    #[arg(long, value_name = "DIR", requires = "sandbox")]
    sandbox_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Put local runs into the cluster (--state-namespace), so that another machine, a CI
    /// job, can go on with `--state cluster`.
    Push {
        /// Run ids, as `runbook list` shows them.
        #[arg(required = true)]
        runs: Vec<String>,
    },
    /// Copy runs from the cluster into the local state directory, to go on without the
    /// cluster's state.
    Pull {
        /// Run ids, as `runbook list --state cluster` shows them.
        #[arg(required = true)]
        runs: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a playbook and its params; run nothing.
    Validate(PlaybookArgs),
    /// Show what `run` would do, step by step, without doing it.
    Plan {
        #[command(flatten)]
        playbook: PlaybookArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
        /// Also save the plan to FILE, with what each decision read, for `run --plan FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show a plan saved with `plan --out`, without reading the cluster (Markdown for a pull
    /// request).
    ShowPlan {
        /// The saved plan.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
    },
    /// Run a playbook, or resume it where it stopped.
    Run {
        #[command(flatten)]
        playbook: PlaybookArgs,
        /// Approve every approval gate.
        #[arg(long)]
        yes: bool,
        /// Approve this step's gate (repeatable).
        #[arg(long, value_name = "STEP")]
        approve: Vec<String>,
        /// Run from this step on, even steps already done.
        #[arg(long, value_name = "STEP")]
        from: Option<String>,
        /// Run only this step, even if it is done.
        #[arg(long, value_name = "STEP")]
        only: Option<String>,
        /// Forget the journal (it is kept aside) and start over.
        #[arg(long)]
        restart: bool,
        /// Run exactly the plan saved in FILE (`plan --out FILE`): stop with exit 6 before a
        /// step whose readings changed since.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        /// The oldest --plan that is run.
        #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_duration)]
        plan_max_age: std::time::Duration,
        /// Text on stderr, or JSON events on stdout.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        sandbox: SandboxArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show a run's state (the most recent run by default).
    Status {
        /// Run id, as `runbook list` shows it.
        run: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// On a terminal, redraw the status every 2 s until the run ends (without a terminal,
        /// print it once).
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List the runs in the state directory (or, with --state cluster, in the cluster).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        state: StateArgs,
    },
    /// One playbook over every hub of a deployer cluster: each hub its own run.
    Fleet {
        #[command(subcommand)]
        command: runbook::fleet::FleetCommand,
    },
    /// Move runs between this machine's state directory and the cluster.
    State {
        #[command(subcommand)]
        command: StateCommand,
        /// The namespace runs are kept in, in the cluster.
        #[arg(
            long,
            env = "RUNBOOK_STATE_NAMESPACE",
            default_value = runbook::engine::lease::DEFAULT_NAMESPACE,
            value_name = "NAMESPACE"
        )]
        state_namespace: String,
    },
    /// The sandbox cluster: a simulated Kubernetes API on 127.0.0.1.
    Sandbox {
        #[command(subcommand)]
        command: runbook::sandbox::SandboxCommand,
    },
    /// The agent of a `sync` with `on:`, run by runbook inside the pod.
    #[command(hide = true)]
    SyncAgent {
        #[command(subcommand)]
        command: runbook::actions::AgentCommand,
    },
}

/// Connects to the cluster when the playbook needs one, or the run is kept there: a bad
/// kubeconfig or a missing context is invalid input, found before anything runs.
async fn cluster_for(
    playbook: &Playbook,
    options: &ClusterOptions,
    shared: Option<&ClusterState>,
) -> Result<Option<Cluster>, Error> {
    if !playbook.uses_kube() && shared.is_none() {
        return Ok(None);
    }
    Ok(Some(Cluster::connect(options).await?))
}

/// `--state cluster`: where in the cluster runs are kept, and who this process is. `state
/// push|pull` always talk to the cluster.
fn cluster_state_of(cli: &Cli) -> Result<Option<ClusterState>, Error> {
    match &cli.command {
        Command::Plan { state, .. }
        | Command::Run { state, .. }
        | Command::Status { state, .. }
        | Command::List { state, .. } => Ok(state.cluster_state()?),
        Command::State {
            state_namespace, ..
        } => {
            let env: std::collections::HashMap<String, String> = std::env::vars().collect();
            Ok(Some(ClusterState::new(
                state_namespace,
                DEFAULT_LEASE_DURATION,
                &env,
            )?))
        }
        _ => Ok(None),
    }
}

/// How long a Lease `state push|pull` takes holds without renewal.
const DEFAULT_LEASE_DURATION: std::time::Duration = runbook::engine::lease::DEFAULT_DURATION;

fn load(
    args: &PlaybookArgs,
    sandbox: Option<&SandboxSession>,
) -> Result<(Playbook, runbook::playbook::Bound), Error> {
    let playbook = Playbook::load(&args.playbook)?;
    let bound = playbook.bind(&Inputs {
        vars: args.vars.clone(),
        vars_file: args.vars_file.clone(),
        defaults: sandbox.map(SandboxSession::params).unwrap_or_default(),
    })?;
    Ok((playbook, bound))
}

/// The state directory: `--state-dir`, else the sandbox's, else `.runbook`.
fn state_dir_of(cli: &Cli, sandbox: Option<&SandboxSession>) -> PathBuf {
    match (&cli.state_dir, sandbox) {
        (Some(dir), _) => dir.clone(),
        (None, Some(sandbox)) => sandbox.state_dir(),
        (None, None) => PathBuf::from(".runbook"),
    }
}

/// What every command of one invocation shares: how much to say, where runs are kept, the
/// cluster to talk to, what the steps' processes get, and the sandbox it serves.
struct Invocation<'a> {
    verbosity: Verbosity,
    /// `--state-dir` (or its default): the runs kept on this machine.
    local_state_dir: PathBuf,
    /// Where this command reads and writes runs: the local state directory, or with
    /// `--state cluster` the cache of the cluster's journals in it.
    state_dir: PathBuf,
    state: StateDir,
    /// `--state cluster`.
    shared: Option<ClusterState>,
    cluster_options: ClusterOptions,
    surroundings: RunEnvironment,
    sandbox: Option<&'a SandboxSession>,
}

impl<'a> Invocation<'a> {
    /// What the commands of `cli` share, from its global flags and `--state`.
    fn new(
        cli: &Cli,
        sandbox: Option<&'a SandboxSession>,
        surroundings: RunEnvironment,
    ) -> Result<Self, Error> {
        let verbosity = if cli.quiet {
            Verbosity::Quiet
        } else if cli.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let local_state_dir = state_dir_of(cli, sandbox);
        let shared = cluster_state_of(cli)?;
        // With --state cluster, the state directory keeps a cache of the cluster's journals,
        // apart from the runs kept on this machine.
        let state_dir = match &shared {
            Some(shared) if !matches!(cli.command, Command::State { .. }) => {
                local_state_dir.join("cluster").join(&shared.namespace)
            }
            _ => local_state_dir.clone(),
        };
        let cluster_options = ClusterOptions {
            kubeconfig: match sandbox {
                Some(sandbox) => Some(sandbox.kubeconfig()),
                None => cli.kubeconfig.clone(),
            },
            context: cli.context.clone(),
        };
        Ok(Invocation {
            verbosity,
            local_state_dir,
            state: StateDir::new(&state_dir),
            state_dir,
            shared,
            cluster_options,
            surroundings,
            sandbox,
        })
    }
}

/// Runs the command of `cli`: builds what its commands share, then hands over to the command.
async fn execute(
    cli: Cli,
    sandbox: Option<&SandboxSession>,
    surroundings: RunEnvironment,
) -> Result<Exit, Error> {
    let at = Invocation::new(&cli, sandbox, surroundings)?;
    // Served from this process while the command runs; stopped (and saved) when it ends.
    let _served = sandbox.map(SandboxSession::serve).transpose()?;
    match cli.command {
        Command::Validate(args) => validate_command(&args),
        Command::Plan {
            playbook,
            format,
            out,
            ..
        } => plan_command(&at, &playbook, format, out.as_deref()).await,
        Command::ShowPlan { file, format } => show_plan_command(&file, format),
        Command::Run {
            playbook,
            yes,
            approve,
            from,
            only,
            restart,
            plan,
            plan_max_age,
            format,
            ..
        } => {
            let options = RunOptions {
                yes,
                approve,
                from,
                only,
                restart,
                surroundings: at.surroundings.clone(),
                cluster_state: at.shared.clone(),
                plan: plan.map(|path| PlanFile {
                    path,
                    max_age: plan_max_age,
                }),
                ..RunOptions::default()
            };
            run_command(&at, &playbook, options, format).await
        }
        Command::Status {
            run, format, watch, ..
        } => status_command(&at, run, format, watch).await,
        Command::List { format, .. } => list_command(&at, format).await,
        Command::State { command, .. } => state_command(&at, command).await,
        Command::Sandbox { command } => {
            runbook::sandbox::run_command(command, &at.cluster_options).await?;
            Ok(Exit::Success)
        }
        Command::Fleet { command } => fleet_command(at, cli.state_dir, command).await,
        // Handled in `main`, without this runtime.
        Command::SyncAgent { .. } => Ok(Exit::InvalidInput),
    }
}

/// `fleet plan|run|status`: the fleet's context from this invocation's.
async fn fleet_command(
    at: Invocation<'_>,
    state_dir: Option<PathBuf>,
    command: runbook::fleet::FleetCommand,
) -> Result<Exit, Error> {
    let sandbox = match (at.sandbox, command.sandbox_to_read()) {
        (Some(session), _) => Some(session.fleet_facts()),
        (None, Some(dir)) => Some(SandboxSession::existing(dir)?.fleet_facts()),
        (None, None) => None,
    };
    let cx = runbook::fleet::FleetContext {
        verbosity: at.verbosity,
        state_dir,
        sandbox,
        cluster_options: at.cluster_options,
        surroundings: at.surroundings,
    };
    runbook::fleet::run_command(command, &cx).await
}

/// `validate`: loads and checks the playbook and its params, and prints the run id.
fn validate_command(args: &PlaybookArgs) -> Result<Exit, Error> {
    let (playbook, bound) = load(args, None)?;
    let run = engine::run_id(&playbook, &bound.params);
    let count = playbook.steps.len();
    let steps = if count == 1 { "step" } else { "steps" };
    report::print_out(&format!(
        "{}: ok, {count} {steps}, run id {run}\n",
        playbook.path.display()
    ));
    Ok(Exit::Success)
}

/// `plan`: what `run` would do now, step by step; with `--out`, saved for `run --plan`.
async fn plan_command(
    at: &Invocation<'_>,
    args: &PlaybookArgs,
    format: PlanFormat,
    out: Option<&std::path::Path>,
) -> Result<Exit, Error> {
    let (playbook, bound) = load(args, at.sandbox)?;
    let reporter = Reporter::new(Format::Text, at.verbosity);
    let cluster = cluster_for(&playbook, &at.cluster_options, at.shared.as_ref()).await?;
    if let (Some(shared), Some(cluster)) = (&at.shared, &cluster) {
        let run = engine::run_id(&playbook, &bound.params);
        shared.refresh_run(cluster, &at.state, &run).await?;
    }
    let plan = engine::plan(
        &playbook,
        &bound,
        &at.state,
        &reporter,
        cluster.as_ref(),
        &at.surroundings,
    )
    .await?;
    let text = match format {
        PlanFormat::Text => plan.to_text(),
        PlanFormat::Json => plan.to_json() + "\n",
        PlanFormat::Markdown => plan.to_markdown(),
    };
    report::print_out(&text);
    if let Some(out) = out {
        SavedPlan::new(&playbook, &bound, &plan).save(out, &bound.masker)?;
    }
    Ok(Exit::Success)
}

/// `show-plan`: a saved plan, without the playbook or the cluster.
fn show_plan_command(file: &std::path::Path, format: PlanFormat) -> Result<Exit, Error> {
    let plan = SavedPlan::load("show-plan", file)?;
    let text = match format {
        PlanFormat::Text => plan.report().to_text(),
        PlanFormat::Json => plan.report().to_json() + "\n",
        PlanFormat::Markdown => plan.to_markdown(),
    };
    report::print_out(&text);
    Ok(Exit::Success)
}

/// `run`: runs (or resumes) the playbook, then prints its summary, and in a GitHub Actions
/// job appends it to the job's page.
async fn run_command(
    at: &Invocation<'_>,
    args: &PlaybookArgs,
    options: RunOptions,
    format: Format,
) -> Result<Exit, Error> {
    let (playbook, bound) = load(args, at.sandbox)?;
    let playbook = std::sync::Arc::new(playbook);
    let reporter = std::sync::Arc::new(Reporter::new(format, at.verbosity));
    let cluster = cluster_for(&playbook, &at.cluster_options, at.shared.as_ref()).await?;
    // A run on a hub (a `hub` param) marks the hub's namespace with its phase while it goes
    // on, as a fleet does for each of its hubs.
    let hub = bound.params.get("hub").and_then(|hub| hub.as_str());
    let mark = match (&cluster, hub) {
        (Some(cluster), Some(hub)) => Some(runbook::fleet::NamespaceMark::from_first_step(
            reporter.clone(),
            cluster.clone(),
            hub,
            &playbook.name,
        )),
        _ => None,
    };
    let output: std::sync::Arc<dyn runbook::engine::event::RunOutput> = match &mark {
        Some(mark) => mark.clone(),
        None => reporter,
    };
    let result = engine::run(
        playbook.clone(),
        &bound,
        &at.state,
        &options,
        output,
        cluster.as_ref(),
    )
    .await;
    if let Some(mark) = &mark {
        mark.finish().await;
    }
    let result = result?;
    if format == Format::Text && at.verbosity != Verbosity::Quiet {
        eprint!("{}", result.summary.to_text());
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into())
            .collect();
        let appended = result
            .summary
            .append_markdown(path.as_ref(), &args, &bound.masker);
        if let Err(error) = appended {
            eprintln!("warning: could not append to GITHUB_STEP_SUMMARY: {error}");
        }
    }
    Ok(result.exit)
}

/// `status`: one run's state; with `--watch` on a terminal, redrawn until the run ends.
async fn status_command(
    at: &Invocation<'_>,
    run: Option<String>,
    format: Format,
    watch: bool,
) -> Result<Exit, Error> {
    let (runs, _) = runs_of(&at.state, at.shared.as_ref(), &at.cluster_options).await?;
    let run = chosen_run(run, &runs, at.shared.as_ref(), &at.state_dir)?;
    use std::io::IsTerminal as _;
    let terminal = std::io::stdout().is_terminal();
    let mut reader = StatusReader {
        state: &at.state,
        shared: at.shared.as_ref(),
        options: &at.cluster_options,
        cluster: None,
    };
    loop {
        let (status, held) = reader.status(&run).await?;
        let text = match format {
            Format::Json => status.to_json() + "\n",
            Format::Text => status.to_terminal(terminal && std::env::var_os("NO_COLOR").is_none()),
        };
        if watch && terminal {
            // Home, clear, then the status: a redraw in place.
            report::print_out(&format!("\x1b[H\x1b[2J{text}"));
        } else {
            report::print_out(&text);
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if !(watch && terminal && held) {
            return Ok(Exit::Success);
        }
        tokio::time::sleep(STATUS_WATCH_EVERY).await;
    }
}

/// `list`: every run, with its cluster, hub and state.
async fn list_command(at: &Invocation<'_>, format: Format) -> Result<Exit, Error> {
    let (ids, cluster) = runs_of(&at.state, at.shared.as_ref(), &at.cluster_options).await?;
    let mut runs = Vec::new();
    for run in ids {
        let run_dir = at.state.run_dir(&run);
        let history = History::load(&run_dir)?;
        let holder = holder_of(&run, &run_dir, at.shared.as_ref(), cluster.as_ref()).await?;
        runs.push(report::RunRow {
            id: run,
            history,
            holder,
        });
    }
    match format {
        Format::Text => report::print_out(&report::render_list(&runs)),
        Format::Json => report::print_out(&format!("{}\n", report::list_json(&runs))),
    }
    Ok(Exit::Success)
}

/// `state push|pull`: moves runs between the local state directory and the cluster.
async fn state_command(at: &Invocation<'_>, command: StateCommand) -> Result<Exit, Error> {
    let shared = at
        .shared
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("state commands keep a cluster state"))?;
    let cluster = Cluster::connect(&at.cluster_options).await?;
    let local = StateDir::new(&at.local_state_dir);
    match command {
        StateCommand::Push { runs } => {
            for run in runs {
                let lines = shared.push(&cluster, &local, &run).await?;
                report::print_out(&format!(
                    "run {run}: pushed to namespace `{}` ({lines} journal line(s) added); go on with --state cluster\n",
                    shared.namespace
                ));
            }
        }
        StateCommand::Pull { runs } => {
            for run in runs {
                let lines = shared.pull(&cluster, &local, &run).await?;
                report::print_out(&format!(
                    "run {run}: pulled into {} ({lines} journal line(s) added); go on with --state local\n",
                    at.local_state_dir.display()
                ));
            }
        }
    }
    Ok(Exit::Success)
}

/// How often `status --watch` redraws.
const STATUS_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The run `status` shows: the one named (which must exist), else the most recent.
fn chosen_run(
    run: Option<String>,
    runs: &[String],
    shared: Option<&ClusterState>,
    state_dir: &std::path::Path,
) -> Result<String, Error> {
    let place = match shared {
        Some(shared) => format!("namespace `{}` of the cluster", shared.namespace),
        None => state_dir.display().to_string(),
    };
    match run {
        Some(run) if runs.contains(&run) => Ok(run),
        Some(run) => {
            let known: Vec<&str> = runs.iter().map(String::as_str).collect();
            let help = match runbook::diagnostic::did_you_mean(&run, &known) {
                Some(close) => format!("did you mean `{close}`?"),
                None => "`runbook list` shows the runs".into(),
            };
            Err(Diagnostic::new(format!("no run `{run}` in {place}"))
                .help(help)
                .into())
        }
        None => Ok(runs.first().cloned().ok_or_else(|| {
            Diagnostic::new(format!("no runs in {place}")).help(
                "start one with `runbook run PLAYBOOK`, or point --state-dir (or --state-namespace) at the right place",
            )
        })?),
    }
}

/// Reads a run's status, for `status` and each redraw of `status --watch`: the cluster is
/// connected once, when first needed (with `--state cluster`, or to ask detached copies how
/// they are), not at every redraw.
struct StatusReader<'a> {
    state: &'a StateDir,
    shared: Option<&'a ClusterState>,
    options: &'a ClusterOptions,
    cluster: Option<Cluster>,
}

impl StatusReader<'_> {
    /// The status of `run` now, and whether a process holds it.
    async fn status(&mut self, run: &str) -> Result<(report::RunStatusView, bool), Error> {
        if let Some(shared) = self.shared {
            if self.cluster.is_none() {
                self.cluster = Some(Cluster::connect(self.options).await?);
            }
            if let Some(cluster) = &self.cluster {
                shared.refresh_run(cluster, self.state, run).await?;
            }
        }
        let run_dir = self.state.run_dir(run);
        let history = History::load(&run_dir)?;
        let holder = holder_of(run, &run_dir, self.shared, self.cluster.as_ref()).await?;
        let held = holder.is_some();
        let copies = self.detached_copies(&history).await;
        let live = runbook::engine::live_file::LiveProgress::read(&run_dir);
        let window = runbook::engine::window::status_forecast(&run_dir);
        let status = report::RunStatusView::new(run, &history, holder, copies)
            .with_live(&history, live)
            .with_window(window);
        Ok((status, held))
    }

    /// The run's copies that go on in a pod or a Job, with what the cluster says of them
    /// when it answers within 10 s (asked again at the next redraw when it does not).
    async fn detached_copies(&mut self, history: &History) -> Vec<runbook::actions::DetachedCopy> {
        let mut copies = runbook::actions::detached_copies(&history.notes);
        if copies.is_empty() {
            return copies;
        }
        if self.cluster.is_none() {
            self.cluster = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                Cluster::connect(self.options),
            )
            .await
            .ok()
            .and_then(Result::ok);
        }
        if let Some(cluster) = &self.cluster {
            for copy in &mut copies {
                copy.ask(cluster).await;
            }
        }
        copies
    }
}

/// The runs `status` and `list` show, most recently active first: those of the state
/// directory, or with `--state cluster` those of the cluster (its journals copied into the
/// cache first), with the cluster they were read from.
async fn runs_of(
    state: &StateDir,
    shared: Option<&ClusterState>,
    options: &ClusterOptions,
) -> Result<(Vec<String>, Option<Cluster>), Error> {
    match shared {
        None => Ok((state.runs()?, None)),
        Some(shared) => {
            let cluster = Cluster::connect(options).await?;
            let runs = shared.refresh_cache(&cluster, state).await?;
            Ok((runs, Some(cluster)))
        }
    }
}

/// Who holds a run: the holder of its lock file, or with `--state cluster`, of its Lease.
async fn holder_of(
    run: &str,
    run_dir: &std::path::Path,
    shared: Option<&ClusterState>,
    cluster: Option<&Cluster>,
) -> Result<Option<runbook::engine::lock::LockHolder>, Error> {
    match (shared, cluster) {
        (Some(shared), Some(cluster)) => shared.holder(cluster, run).await,
        _ => Ok(RunLock::holder(run_dir)),
    }
}

/// The `--sandbox` of a `plan`, `run`, `fleet plan` or `fleet run`: its `--sandbox-dir`,
/// and for a fleet how many hubs to seed.
fn sandbox_args(cli: &Cli) -> Option<(Option<&std::path::Path>, Option<usize>)> {
    match &cli.command {
        Command::Plan { sandbox, .. } | Command::Run { sandbox, .. } if sandbox.sandbox => {
            Some((sandbox.sandbox_dir.as_deref(), None))
        }
        Command::Fleet { command } => command
            .sandbox_to_serve()
            .map(|(dir, hubs)| (dir, Some(hubs))),
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::SyncAgent { command } = cli.command {
        // In a pod: no state dir, no cluster; the agent makes its own runtime.
        return runbook::actions::run_agent_command(command);
    }
    // Held until the end: the sandbox directory is seeded and served by one process.
    let prepared = sandbox_args(&cli).map(|(dir, hubs)| prepare_sandbox(&cli, dir, hubs));
    let (sandbox, _sandbox_lock) = match prepared {
        Some(Ok((session, lock))) => (Some(session), lock),
        Some(Err(error)) => return report_error(&error),
        None => (None, None),
    };
    // Kept until the end: the kubeconfig that gives child processes `--context`.
    let (_context_file, surroundings) = match surroundings_of(&cli, sandbox.as_ref()) {
        Ok(found) => found,
        Err(error) => return report_error(&error),
    };
    // Multi-threaded: template lookups (`kube_get`) block in place while the cluster client's
    // connections keep being driven on the other worker.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(Exit::StepFailed.code());
        }
    };
    let quiet = cli.quiet;
    let was_run = match &cli.command {
        Command::Run { .. } => true,
        Command::Fleet { command } => command.is_run(),
        _ => false,
    };
    let state_dir = state_dir_of(&cli, sandbox.as_ref());
    let result = runtime.block_on(execute(cli, sandbox.as_ref(), surroundings));
    // A step interrupted while blocked in a system call (a read of a FIFO or of a file
    // server that does not answer) still holds a thread: do not wait for it, the process's
    // exit ends it.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    let exit = match result {
        Ok(exit) => exit,
        Err(error) => {
            let code = report_error(&error);
            if let Some(sandbox) = sandbox {
                sandbox.finish(error.exit(), was_run, quiet, &state_dir);
            }
            return code;
        }
    };
    if let Some(sandbox) = sandbox {
        sandbox.finish(exit, was_run, quiet, &state_dir);
    }
    ExitCode::from(exit.code())
}

/// How long the runtime's leftover tasks get to finish once the command is done.
const RUNTIME_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn report_error(error: &Error) -> ExitCode {
    match error {
        Error::Invalid(diagnostic) => eprint!("{diagnostic}"),
        Error::Locked(message) => eprintln!("error: {message}"),
        Error::Other(cause) => eprintln!("error: {cause:#}"),
    }
    ExitCode::from(error.exit().code())
}

/// What the steps' processes and agents are told: the processes the run starts (`kubectl`,
/// `deployer`, `helm` in `run` steps) talk to the cluster the `kube.*` steps talk to (the
/// sandbox's, never the user's own kubeconfig's, with `--sandbox`); the sandbox's pods run
/// on this machine, so what a copy `on:` a pod leaves there (its state, the agent binary)
/// goes in the sandbox directory, not /var/tmp, unless `RUNBOOK_AGENT_DIR` says otherwise.
/// Returns the `--context` kubeconfig file too, to be kept until the run ends.
fn surroundings_of(
    cli: &Cli,
    sandbox: Option<&SandboxSession>,
) -> Result<(Option<tempfile::NamedTempFile>, RunEnvironment), Error> {
    let mut surroundings = RunEnvironment::default();
    let (context_file, kubeconfig) = match sandbox {
        Some(session) => {
            if std::env::var_os("RUNBOOK_AGENT_DIR").is_none() {
                surroundings.agent_dir = Some(session.dir().join("agents").display().to_string());
            }
            (None, Some(session.kubeconfig().display().to_string()))
        }
        None => point_children_at_cluster(cli)?,
    };
    if let Some(kubeconfig) = kubeconfig {
        surroundings
            .process_env
            .insert("KUBECONFIG".into(), kubeconfig);
    }
    Ok((context_file, surroundings))
}

/// Points the processes the run starts (`kubectl`, `deployer`, `helm` in `run` steps) at
/// the cluster of `--kubeconfig` and `--context`, the one `kube.*` steps talk to, by setting
/// their `KUBECONFIG`: the given file (made absolute, since steps may run elsewhere), and
/// before it, for `--context`, a file that only sets `current-context` (the first file of
/// the list to set it wins, as kubectl merges them; no credentials are copied). The file is
/// returned to be kept until the run ends, with the `KUBECONFIG` value.
fn point_children_at_cluster(
    cli: &Cli,
) -> Result<(Option<tempfile::NamedTempFile>, Option<String>), Error> {
    if cli.kubeconfig.is_none() && cli.context.is_none() {
        return Ok((None, None));
    }
    let mut list: Vec<PathBuf> = match &cli.kubeconfig {
        Some(path) => vec![std::path::absolute(path).map_err(|error| {
            Diagnostic::new(format!("--kubeconfig {}: {error}", path.display()))
        })?],
        None => runbook::kube::default_kubeconfig_files(),
    };
    let mut context_file = None;
    if let Some(context) = &cli.context {
        // A JSON string is a YAML string: any context name is quoted right.
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {}\n",
            serde_json::to_string(context).unwrap_or_default()
        );
        let write = || -> std::io::Result<tempfile::NamedTempFile> {
            let mut file = tempfile::Builder::new()
                .prefix("runbook-context-")
                .suffix(".yaml")
                .tempfile()?;
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            Ok(file)
        };
        let file = anyhow::Context::context(write(), "cannot write a kubeconfig for --context")?;
        list.insert(0, file.path().to_path_buf());
        context_file = Some(file);
    }
    let joined = std::env::join_paths(&list).map_err(|error| {
        Diagnostic::new(format!(
            "the kubeconfig paths cannot be put in KUBECONFIG: {error}"
        ))
    })?;
    let joined = joined.into_string().map_err(|joined| {
        Diagnostic::new(format!(
            "the kubeconfig paths are not UTF-8 text: {}",
            joined.to_string_lossy()
        ))
    })?;
    Ok((context_file, Some(joined)))
}

/// File name of the lock of a `--sandbox-dir`.
const SANDBOX_LOCK_FILE: &str = "sandbox.lock";

/// Takes the lock of a `--sandbox-dir` (created if missing) for the whole command: one
/// process seeds the directory and serves its cluster; another exits 4 and names it.
fn lock_sandbox_dir(dir: &std::path::Path) -> Result<RunLock, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|error| Diagnostic::new(format!("--sandbox-dir {}: {error}", dir.display())))?;
    match RunLock::acquire_file(&dir.join(SANDBOX_LOCK_FILE))? {
        Ok(Acquired::Free(lock) | Acquired::TakenOver(lock, _)) => Ok(lock),
        Err(holder) => {
            let who = holder.map_or_else(
                || "another process".to_string(),
                |holder| holder.to_string(),
            );
            Err(Error::Locked(format!(
                "the sandbox in {} is in use by {who}\nhelp: wait for that command to finish, or use another --sandbox-dir",
                dir.display()
            )))
        }
    }
}

/// Seeds (or finds) the sandbox directory before the runtime starts. A `--sandbox-dir` is
/// locked first (the lock is returned, to be held until the command ends), so that it is
/// seeded once.
fn prepare_sandbox(
    cli: &Cli,
    dir: Option<&std::path::Path>,
    fleet_hubs: Option<usize>,
) -> Result<(SandboxSession, Option<RunLock>), Error> {
    // Before anything is created: a runbook without the sandbox changes nothing.
    runbook::sandbox::check_built("--sandbox")?;
    for (given, flag) in [
        (cli.kubeconfig.is_some(), "--kubeconfig"),
        (cli.context.is_some(), "--context"),
    ] {
        if given {
            return Err(Diagnostic::new(format!(
                "{flag} cannot be used with --sandbox: the run talks to the sandbox only"
            ))
            .help(format!(
                "drop {flag}, or drop --sandbox to use a real cluster"
            ))
            .into());
        }
    }
    let lock = dir.map(lock_sandbox_dir).transpose()?;
    let session = match fleet_hubs {
        None => SandboxSession::prepare(dir, !cli.quiet)?,
        Some(hubs) => SandboxSession::prepare_fleet(dir, hubs, !cli.quiet)?,
    };
    Ok((session, lock))
}
