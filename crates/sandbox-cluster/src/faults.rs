//! Fault injection for reliability tests: added latency, a share of 500s, of dropped
//! connections and of 409 Conflicts on writes, drawn from a seeded generator so that a
//! failing test can be replayed.
//!
//! An exec request drawn for a drop is answered (101) and its stream is cut later, at a
//! moment drawn within its first [`EXEC_CUT_WINDOW`]: mid-stream for any command that runs
//! longer, as a network drops a long connection. `exec_drop_after` cuts every exec stream
//! that is still open that long after it started.

use std::sync::Mutex;
use std::time::Duration;

/// What to inject, and the seed of the draws (also used for names and uids).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added before every answer.
    pub latency: Duration,
    /// Share of requests answered 500 `InternalError` (0 to 1).
    pub error_rate: f64,
    /// Share of requests whose connection is closed without an answer.
    pub drop_rate: f64,
    /// Share of writes (POST, PUT, PATCH, DELETE) answered 409 `Conflict`.
    pub conflict_rate: f64,
    /// Cut every exec stream still open this long after it started.
    pub exec_drop_after: Option<Duration>,
    /// The seed; a random one when `None`.
    pub seed: Option<u64>,
    /// Requests refused with 403 as RBAC would refuse them (`--forbid create:namespaces`).
    pub forbidden: Vec<Forbidden>,
}

/// A verb on a resource that the sandbox's user may not use, as a Role without that rule:
/// `create:namespaces`, `delete:pods`, `*:leases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// An RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), or `*`.
    pub verb: String,
    /// A resource's plural name (`namespaces`, `leases`), or `*`.
    pub resource: String,
}

/// The verbs a `--forbid` rule may name.
const RBAC_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

impl Forbidden {
    /// Reads `VERB:RESOURCE`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (verb, resource) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` is not VERB:RESOURCE (e.g. create:namespaces)"))?;
        if !RBAC_VERBS.contains(&verb) {
            return Err(format!(
                "`{verb}` is not a verb: use one of {}",
                RBAC_VERBS.join(", ")
            ));
        }
        if resource.is_empty() {
            return Err(format!("`{text}` names no resource"));
        }
        Ok(Forbidden {
            verb: verb.into(),
            resource: resource.into(),
        })
    }

    /// Whether this rule refuses `verb` on `resource`.
    pub fn refuses(&self, verb: &str, resource: &str) -> bool {
        (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
    }
}

/// The fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without answering.
    Drop,
    /// Answer 500.
    Error,
    /// Answer 409.
    Conflict,
}

impl Fault {
    /// How the request log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Drop => "drop",
            Fault::Error => "error",
            Fault::Conflict => "conflict",
        }
    }
}

/// The window of an exec's stream in which a drawn drop cuts it.
pub const EXEC_CUT_WINDOW: Duration = Duration::from_secs(1);

/// A request extension for `pods/exec`: cut the stream (close the connection without a
/// Close frame) this long after it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCut(pub Duration);

/// Draws the faults, request by request.
#[derive(Debug)]
pub struct FaultInjector {
    faults: Faults,
    rng: Mutex<fastrand::Rng>,
}

impl FaultInjector {
    /// An injector for `faults`, drawing from `seed`.
    pub fn new(faults: Faults, seed: u64) -> Self {
        FaultInjector {
            faults,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    /// Whether a `--forbid` rule refuses `verb` on `resource`.
    pub fn forbids(&self, verb: &str, resource: &str) -> bool {
        self.faults
            .forbidden
            .iter()
            .any(|rule| rule.refuses(verb, resource))
    }

    /// The latency to add to every request.
    pub fn latency(&self) -> Duration {
        self.faults.latency
    }

    /// Three draws per request whatever happens, so that one request's outcome does not
    /// shift the draws of the next ones.
    fn draws(&self) -> (f64, f64, f64) {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (rng.f64(), rng.f64(), rng.f64())
    }

    /// The fault for the next request, if any.
    pub fn draw(&self, is_write: bool) -> Option<Fault> {
        let draws = self.draws();
        self.choose(draws, is_write)
    }

    /// The fault for the next exec request, and when to cut its stream if it is cut: a
    /// drawn [`Fault::Drop`] is a cut, not a connection closed before the answer.
    pub fn draw_exec(&self) -> (Option<Fault>, Option<StreamCut>) {
        let (drop, error, conflict) = self.draws();
        let fault = self.choose((drop, error, conflict), false);
        // Below the rate, the draw is uniform in [0, rate): it places the cut too.
        let drawn = (fault == Some(Fault::Drop))
            .then(|| EXEC_CUT_WINDOW.mul_f64(drop / self.faults.drop_rate));
        let cut = match (drawn, self.faults.exec_drop_after) {
            (Some(drawn), Some(after)) => Some(drawn.min(after)),
            (drawn, after) => drawn.or(after),
        };
        (fault, cut.map(StreamCut))
    }

    fn choose(&self, (drop, error, conflict): (f64, f64, f64), is_write: bool) -> Option<Fault> {
        if drop < self.faults.drop_rate {
            Some(Fault::Drop)
        } else if error < self.faults.error_rate {
            Some(Fault::Error)
        } else if is_write && conflict < self.faults.conflict_rate {
            Some(Fault::Conflict)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbid_rules_read_verb_and_resource() {
        let rule = Forbidden::parse("create:namespaces").unwrap();
        assert!(rule.refuses("create", "namespaces"));
        assert!(!rule.refuses("get", "namespaces"));
        assert!(!rule.refuses("create", "pods"));
        assert!(
            Forbidden::parse("*:leases")
                .unwrap()
                .refuses("update", "leases")
        );
        assert!(
            Forbidden::parse("make:pods")
                .unwrap_err()
                .contains("not a verb")
        );
        assert!(
            Forbidden::parse("create")
                .unwrap_err()
                .contains("VERB:RESOURCE")
        );
    }

    #[test]
    fn rates_of_zero_and_one_are_exact() {
        let never = FaultInjector::new(Faults::default(), 1);
        assert!((0..1000).all(|_| never.draw(true).is_none()));
        let always = FaultInjector::new(
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            1,
        );
        assert!((0..1000).all(|_| always.draw(false) == Some(Fault::Error)));
        let conflicts = FaultInjector::new(
            Faults {
                conflict_rate: 1.0,
                ..Faults::default()
            },
            1,
        );
        assert_eq!(conflicts.draw(false), None, "reads never conflict");
        assert_eq!(conflicts.draw(true), Some(Fault::Conflict));
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let faults = Faults {
            error_rate: 0.3,
            drop_rate: 0.1,
            conflict_rate: 0.2,
            ..Faults::default()
        };
        let one = FaultInjector::new(faults.clone(), 42);
        let two = FaultInjector::new(faults, 42);
        let draws = |injector: &FaultInjector| {
            (0..200)
                .map(|i| injector.draw(i % 2 == 0))
                .collect::<Vec<_>>()
        };
        let first = draws(&one);
        assert_eq!(first, draws(&two));
        assert!(
            first.contains(&Some(Fault::Drop))
                && first.contains(&Some(Fault::Error))
                && first.contains(&None)
        );
    }

    #[test]
    fn exec_drops_are_cuts_within_the_window() {
        let dropping = FaultInjector::new(
            Faults {
                drop_rate: 1.0,
                ..Faults::default()
            },
            3,
        );
        for _ in 0..100 {
            let (fault, cut) = dropping.draw_exec();
            assert_eq!(fault, Some(Fault::Drop));
            assert!(cut.is_some_and(|StreamCut(after)| after < EXEC_CUT_WINDOW));
        }
        let timed = FaultInjector::new(
            Faults {
                exec_drop_after: Some(Duration::from_millis(300)),
                ..Faults::default()
            },
            3,
        );
        assert_eq!(
            timed.draw_exec(),
            (None, Some(StreamCut(Duration::from_millis(300))))
        );
        assert_eq!(
            FaultInjector::new(Faults::default(), 3).draw_exec(),
            (None, None)
        );
    }
}
