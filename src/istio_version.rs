//! Istio releases as meshctl chooses them: `major.minor.patch`, and whether a release supports the
//! pinned Kubernetes. Pure; fetching a release's istioctl is `istio_release`'s.

use std::fmt;

use crate::versions;

/// An Istio release, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for IstioVersion {
    type Err = String;

    /// `1.31.1`: three numbers, as Istio tags its releases (no `v`, no pre-release).
    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let number = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        match parts.as_slice() {
            [a, b, c] => match (number(a), number(b), number(c)) {
                (Some(major), Some(minor), Some(patch)) => Ok(IstioVersion { major, minor, patch }),
                _ => Err(format!(
                    "`{text}` is not an Istio release such as {}",
                    versions::ISTIO_VERSION
                )),
            },
            _ => Err(format!(
                "`{text}` is not an Istio release such as {}",
                versions::ISTIO_VERSION
            )),
        }
    }
}

impl IstioVersion {
    /// `major.minor`.
    pub fn minor_line(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

/// Refuses a release whose support window, as Istio publishes it, does not include the pinned
/// Kubernetes; and one whose window meshctl does not know (it would be a guess).
pub fn check_supported(version: &IstioVersion, kubernetes_minor: &str) -> Result<(), String> {
    let line = version.minor_line();
    let Some((_, low, high)) = versions::ISTIO_KUBERNETES_SUPPORT
        .iter()
        .find(|(l, _, _)| *l == line)
    else {
        let known: Vec<&str> = versions::ISTIO_KUBERNETES_SUPPORT
            .iter()
            .map(|(l, _, _)| *l)
            .collect();
        return Err(format!(
            "Istio {version}: meshctl knows the Kubernetes support of Istio {} only; its templates follow {}",
            known.join(", "),
            versions::ISTIO_MINOR
        ));
    };
    let key = |v: &str| -> (u32, u32) {
        let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    if (key(low)..=key(high)).contains(&key(kubernetes_minor)) {
        Ok(())
    } else {
        Err(format!(
            "Istio {version} supports Kubernetes {low} to {high}, and these clusters run Kubernetes {kubernetes_minor}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_three_numbers() {
        let v: IstioVersion = "1.31.1".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 31, 1));
        assert_eq!(v.to_string(), "1.31.1");
        for bad in ["1.31", "v1.31.1", "1.31.1-rc.0", "1..1", ""] {
            assert!(bad.parse::<IstioVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_release_is_refused_outside_its_published_kubernetes_window_or_when_unknown() {
        let v = |s: &str| s.parse::<IstioVersion>().unwrap();
        check_supported(&v("1.31.1"), "1.36").unwrap();
        check_supported(&v("1.30.5"), "1.32").unwrap();
        let too_new = check_supported(&v("1.31.1"), "1.37").unwrap_err();
        assert!(
            too_new.contains("supports Kubernetes 1.32 to 1.36") && too_new.contains("1.37"),
            "{too_new}"
        );
        let unknown = check_supported(&v("1.25.0"), "1.36").unwrap_err();
        assert!(
            unknown.contains("knows the Kubernetes support of Istio 1.30, 1.31 only"),
            "{unknown}"
        );
    }
}
