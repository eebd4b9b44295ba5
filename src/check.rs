//! One way to say "is it right?": a [`Check`] is what was checked, where (cluster, phase, object),
//! how it came out, and what fixes it. `status`, `doctor`, `certs status` and `verify`'s hints
//! all speak it, and print it through one printer ([`print`]) and one document shape ([`document`]),
//! as linkerd's `check` keeps its checks as data with one runner and one output.
//!
//! A fix is data ([`Fix`]); the command layer spells it as a command line with the flags the user
//! gave, so the line printed is the one to run.

use serde::Serialize;

use crate::plan::Phase;
use crate::probe::Finding;

/// How a check came out: `ok` and `warn` pass, the rest do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    /// Works, but not as meshctl is tested with or will not for long.
    Warn,
    /// Something meshctl puts there is not there.
    Missing,
    /// It is there and not as planned.
    Different,
    /// The cluster did not answer.
    Unreachable,
    /// Someone else's object stands where meshctl's goes.
    Foreign,
    /// meshctl's object that the plan's must not replace.
    Conflict,
    /// The cluster is taken out of the mesh (`meshctl isolate`).
    Isolated,
    /// Wrong in any other way.
    Fail,
}

impl State {
    /// The word for it, as the document spells it.
    pub fn word(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warn => "warn",
            State::Missing => "missing",
            State::Different => "different",
            State::Unreachable => "unreachable",
            State::Foreign => "foreign",
            State::Conflict => "conflict",
            State::Isolated => "isolated",
            State::Fail => "fail",
        }
    }

    /// Whether a check in this state passes.
    pub fn passed(self) -> bool {
        matches!(self, State::Ok | State::Warn)
    }

    fn mark(self) -> &'static str {
        match self {
            State::Ok => "✓",
            State::Warn => "!",
            _ => "✗",
        }
    }
}

/// What fixes a check that did not pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "command", content = "argument")]
pub enum Fix {
    /// `meshctl up --only PHASE`.
    UpOnly(Phase),
    /// `meshctl up`, of one phase or (none) every one.
    Up(Option<Phase>),
    /// `meshctl up --adopt`: someone else's object stands where meshctl's goes.
    Adopt(Option<Phase>),
    /// `meshctl rejoin CLUSTER`.
    Rejoin(String),
    /// `meshctl isolate CLUSTER`: it does not answer, and the others wait on it.
    Isolate(String),
    /// `meshctl certs rotate --cluster CLUSTER`.
    RotateCa(String),
    /// No meshctl command: what to do, in words.
    ByHand(String),
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: a phase (`remote-secrets`), a tool (`docker`), a property of the mesh
    /// (`peers`, `intermediate CA`).
    pub check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The phase that owns what was checked, where one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    /// The object checked, e.g. `Secret istio-system/cacerts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub state: State,
    pub detail: String,
    /// What fixes it; [`document`] spells it as the command to run.
    #[serde(skip)]
    pub fix: Option<Fix>,
    /// Each object a phase owns, as its probe found it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

impl Check {
    /// A check of nothing in particular: `check` came out `state`.
    pub fn new(check: impl Into<String>, state: State, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            cluster: None,
            phase: None,
            object: None,
            state,
            detail: detail.into(),
            fix: None,
            findings: Vec::new(),
        }
    }

    /// In cluster `cluster`.
    pub fn in_cluster(mut self, cluster: impl Into<String>) -> Check {
        self.cluster = Some(cluster.into());
        self
    }

    /// Of an object phase `phase` owns.
    pub fn of_phase(mut self, phase: Phase) -> Check {
        self.phase = Some(phase.name());
        self
    }

    /// Of object `object`.
    pub fn on(mut self, object: impl Into<String>) -> Check {
        self.object = Some(object.into());
        self
    }

    /// Fixed by `fix`.
    pub fn fixed_by(mut self, fix: Fix) -> Check {
        self.fix = Some(fix);
        self
    }

    /// Fixed by what `hint` says, when it says anything.
    pub fn hinted(self, hint: impl Into<String>) -> Check {
        let hint = hint.into();
        if hint.is_empty() {
            self
        } else {
            self.fixed_by(Fix::ByHand(hint))
        }
    }
}

/// Whether every check passed.
pub fn all_passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.state.passed())
}

/// How the command layer spells a fix: the command line, with the user's flags.
pub type Spell<'a> = &'a dyn Fn(&Fix) -> String;

/// The checks as lines for people: a mark, the cluster where there is one, what was checked, the
/// state and the detail, in columns; under a check that did not pass, `fix:` and the command to
/// run as printed, or `hint:` and what to do.
pub fn lines(checks: &[Check], spell: Spell<'_>) -> Vec<String> {
    // At least as wide as cluster names and phase names usually are, so that one cluster's lines
    // line up with another's from one run to the next.
    let clusters = checks
        .iter()
        .filter_map(|c| c.cluster.as_deref())
        .map(|c| c.len().max(10))
        .max();
    let what = checks
        .iter()
        .map(|c| c.check.chars().count().max(15))
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for c in checks {
        let place = match clusters {
            Some(width) => format!("{:<width$} ", c.cluster.as_deref().unwrap_or("")),
            None => String::new(),
        };
        let state = c.state.word();
        out.push(
            format!(
                "{} {place}{:<what$} {state:<11} {}",
                c.state.mark(),
                c.check,
                c.detail
            )
            .trim_end()
            .to_string(),
        );
        if let Some(fix) = c.fix.as_ref() {
            let label = if matches!(fix, Fix::ByHand(_)) {
                "hint"
            } else {
                "fix"
            };
            let indent = 2 + place.len() + what + 1;
            out.push(format!("{:indent$}{label}: {}", "", spell(fix)));
        }
    }
    out
}

/// Prints [`lines`] on stdout.
pub fn print(checks: &[Check], spell: Spell<'_>) {
    for line in lines(checks, spell) {
        println!("{line}");
    }
}

/// The checks as a document: each as it serializes, with `fix`, the command that fixes it.
pub fn document(checks: &[Check], spell: Spell<'_>) -> serde_json::Value {
    checks
        .iter()
        .map(|c| {
            let mut value = serde_json::to_value(c).expect("plain data serializes");
            if let Some(fix) = &c.fix {
                value["fix"] = spell(fix).into();
            }
            value
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spell(fix: &Fix) -> String {
        match fix {
            Fix::ByHand(words) => words.clone(),
            Fix::UpOnly(phase) => format!("meshctl up --only {}", phase.name()),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_check_that_failed_prints_the_command_that_fixes_it_under_its_columns() {
        let checks = vec![
            Check::new("istio", State::Ok, "istiod ready")
                .in_cluster("cluster1")
                .of_phase(Phase::Istio),
            Check::new("remote-secrets", State::Missing, "no remote secret for cluster1")
                .in_cluster("c2")
                .fixed_by(Fix::UpOnly(Phase::RemoteSecrets)),
        ];
        let lines = lines(&checks, &spell);
        assert_eq!(
            lines,
            vec![
                "✓ cluster1   istio           ok          istiod ready",
                "✗ c2         remote-secrets  missing     no remote secret for cluster1",
                "                             fix: meshctl up --only remote-secrets",
            ]
        );
        assert!(!all_passed(&checks));
    }

    #[test]
    fn checks_without_a_cluster_have_no_cluster_column_and_words_are_a_hint() {
        let checks = vec![
            Check::new("docker", State::Fail, "not found").hinted("install docker"),
            Check::new("kind", State::Warn, "v0.30.0").hinted(""),
        ];
        assert_eq!(
            lines(&checks, &spell),
            vec![
                "✗ docker          fail        not found",
                "                  hint: install docker",
                "! kind            warn        v0.30.0",
            ]
        );
        assert!(!all_passed(&checks[..1]) && all_passed(&checks[1..]));
    }

    #[test]
    fn the_document_carries_the_fix_as_a_command_and_leaves_out_what_is_not_known() {
        let checks = vec![
            Check::new("peers", State::Fail, "cluster1's istiod does not read cluster2")
                .in_cluster("cluster1")
                .on("remote secret for cluster2")
                .fixed_by(Fix::UpOnly(Phase::RemoteSecrets)),
        ];
        assert_eq!(
            document(&checks, &spell),
            serde_json::json!([{"check": "peers", "cluster": "cluster1", "object": "remote secret for cluster2",
                "state": "fail", "detail": "cluster1's istiod does not read cluster2",
                "fix": "meshctl up --only remote-secrets"}])
        );
    }
}
