//! Istio control-plane revisions, and the names Istio's charts give to what a revision installs.
//! Pure.
//!
//! A mesh installed without a revision runs Istio's `default` revision: Deployment and Service
//! `istiod`, injector webhook `istio-sidecar-injector`. A revisioned install (`spec.revision`) puts
//! the revision after each name (`istiod-1-31-1`), so two releases run side by side during a canary
//! upgrade (Istio chart `istio-discovery`: `deployment.yaml`, `service.yaml`,
//! `mutatingwebhook.yaml`). Which revision injects workloads is the `default` revision tag: the
//! webhook `istio-revision-tag-default`, whose `istio.io/rev` label names the revision it points at
//! (`revision-tags-mwc.yaml`; moved by `istioctl tag set default`).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::istio_version::IstioVersion;

/// The label every revisioned object carries, and the value Istio gives the unrevisioned install.
pub const LABEL: &str = "istio.io/rev";
const DEFAULT: &str = "default";

/// The webhook of the `default` revision tag: it injects namespaces labelled
/// `istio-injection=enabled` (and `istio.io/rev=default`) with the revision it points at.
pub const DEFAULT_TAG_WEBHOOK: &str = "istio-revision-tag-default";

/// One control-plane revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(Option<String>);

impl Revision {
    /// The unrevisioned install's.
    pub fn default_revision() -> Revision {
        Revision(None)
    }

    /// The revision meshctl names a release's control plane: `1.31.1` → `1-31-1` (dots are not
    /// allowed in a revision, which becomes part of object names and label values).
    pub fn of(version: &IstioVersion) -> Revision {
        Revision(Some(format!(
            "{}-{}-{}",
            version.major, version.minor, version.patch
        )))
    }

    /// From an `istio.io/rev` label value.
    pub fn from_label(label: &str) -> Revision {
        match label {
            "" | DEFAULT => Revision(None),
            other => Revision(Some(other.to_string())),
        }
    }

    pub fn is_default(&self) -> bool {
        self.0.is_none()
    }

    /// Its `istio.io/rev` label value (`default` for the unrevisioned install).
    pub fn label(&self) -> &str {
        self.0.as_deref().unwrap_or(DEFAULT)
    }

    /// `spec.revision` of an IstioOperator: empty for the unrevisioned install.
    pub fn operator_value(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }

    /// Its istiod Deployment and Service.
    pub fn istiod(&self) -> String {
        self.suffixed("istiod")
    }

    /// Its injector webhook.
    pub fn injector_webhook(&self) -> String {
        self.suffixed("istio-sidecar-injector")
    }

    fn suffixed(&self, name: &str) -> String {
        match &self.0 {
            None => name.to_string(),
            Some(rev) => format!("{name}-{rev}"),
        }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl Serialize for Revision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

impl<'de> serde::Deserialize<'de> for Revision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Revision, D::Error> {
        let label = String::deserialize(d)?;
        Ok(Revision::from_label(&label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_names_what_it_installs_and_the_default_one_names_them_bare() {
        let canary = Revision::of(&"1.31.1".parse().unwrap());
        assert_eq!(canary.label(), "1-31-1");
        assert_eq!(canary.istiod(), "istiod-1-31-1");
        assert_eq!(canary.injector_webhook(), "istio-sidecar-injector-1-31-1");
        assert_eq!(canary.operator_value(), "1-31-1");
        let default = Revision::default_revision();
        assert_eq!(
            (
                default.label(),
                default.istiod().as_str(),
                default.operator_value()
            ),
            ("default", "istiod", "")
        );
        assert_eq!(Revision::from_label("default"), default);
        assert_eq!(Revision::from_label("1-31-1"), canary);
        let json = serde_json::to_string(&canary).unwrap();
        assert_eq!(serde_json::from_str::<Revision>(&json).unwrap(), canary);
    }
}
