//! Every pinned version, image and download location meshctl uses, in one place.
//!
//! Changing a version is a one-line change here; nothing else in the crate spells a version or an image.

/// Istio release whose IstioOperator fields, ports and labels the templates follow.
pub const ISTIO_VERSION: &str = "1.31.1";

/// `major.minor` of [`ISTIO_VERSION`]; istioctl must match it unless skew is allowed.
pub const ISTIO_MINOR: &str = "1.31";

/// The Kubernetes minor versions each Istio line supports, `(istio, lowest, highest)`, as Istio's
/// release announcements state them (istio.io `news/releases/1.30.x/announcing-1.30`,
/// `1.31.x/announcing-1.31`: "supported on Kubernetes 1.32 to 1.36"). A line not listed is refused:
/// its window would be a guess.
pub const ISTIO_KUBERNETES_SUPPORT: &[(&str, &str, &str)] =
    &[("1.30", "1.32", "1.36"), ("1.31", "1.32", "1.36")];

/// kind release the cluster configs are written for.
pub const KIND_VERSION: &str = "v0.32.0";

/// Default kind node image (kind v0.32's default, Kubernetes 1.36), pinned by digest.
pub const KIND_NODE_IMAGE: &str =
    "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5";

/// Kubernetes minor version of [`KIND_NODE_IMAGE`] (k8s-openapi is pinned to the same feature).
pub const KUBERNETES_MINOR: &str = "1.36";

/// MetalLB release. v0.16.0+ is required on Kubernetes 1.36 (metallb#3034).
pub const METALLB_VERSION: &str = "v0.16.1";

/// The native (L2, no FRR) MetalLB install manifest.
pub const METALLB_MANIFEST_URL: &str =
    "https://raw.githubusercontent.com/metallb/metallb/v0.16.1/config/manifests/metallb-native.yaml";

/// sha256 of the manifest at [`METALLB_MANIFEST_URL`]; a download that differs is refused.
pub const METALLB_MANIFEST_SHA256: &str = "bf25feebb7582ca7df845efd52ffbc2960d6cbf4cfc972f47fded9f788b67f0b";

/// Gateway API release Istio 1.31 is built against (its go.mod: `sigs.k8s.io/gateway-api`). An
/// ambient mesh's east-west gateway is a Gateway API `Gateway`; its CRDs are not Istio's.
pub const GATEWAY_API_VERSION: &str = "v1.6.0";

/// The standard-channel install of [`GATEWAY_API_VERSION`]: the CRDs (and the admission policy
/// that keeps older bundles from replacing them).
pub const GATEWAY_API_CRDS_URL: &str =
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.0/standard-install.yaml";

/// sha256 of the manifest at [`GATEWAY_API_CRDS_URL`]; a download that differs is refused. Upstream
/// publishes no checksum: this is the file built from the v1.6.0 tag by its own
/// `hack/build-install-yaml.sh`, which its release workflow checks the published asset against.
pub const GATEWAY_API_CRDS_SHA256: &str = "a557172e8348f758479e9ee4000bbbb4b4aa48302a6b73461823ea5349bad56d";

/// The CRD whose presence says a cluster has Gateway API: meshctl installs the pinned CRDs only
/// where it is missing, as Istio's guides do (`kubectl get crd gateways.gateway.networking.k8s.io
/// || kubectl apply ...`), and never replaces a cluster's own.
pub const GATEWAY_API_PROBE_CRD: &str = "gateways.gateway.networking.k8s.io";

/// helloworld sample images. Only two versions exist upstream; cluster N runs the
/// `(N-1) % 2`-th image under its own deployment name, so answers are told apart by instance.
pub const HELLOWORLD_IMAGES: [&str; 2] = [
    "registry.istio.io/release/examples-helloworld-v1:1.0",
    "registry.istio.io/release/examples-helloworld-v2:1.0",
];

/// The curl client of Istio's samples (replaced `sleep` upstream).
pub const CURL_IMAGE: &str = "docker.io/curlimages/curl:8.16.0";

/// One line per pinned component, as `meshctl version` prints it.
pub fn summary() -> Vec<(&'static str, String)> {
    vec![
        ("meshctl", env!("CARGO_PKG_VERSION").to_string()),
        ("istio", ISTIO_VERSION.to_string()),
        ("kind", KIND_VERSION.to_string()),
        ("kind node image", KIND_NODE_IMAGE.to_string()),
        ("kubernetes", KUBERNETES_MINOR.to_string()),
        ("metallb", METALLB_VERSION.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_minor_is_the_prefix_of_the_istio_version() {
        assert!(ISTIO_VERSION.starts_with(&format!("{ISTIO_MINOR}.")));
    }

    #[test]
    fn node_image_matches_the_kubernetes_minor_and_is_pinned_by_digest() {
        assert!(KIND_NODE_IMAGE.contains(&format!(":v{KUBERNETES_MINOR}.")));
        assert!(KIND_NODE_IMAGE.contains("@sha256:"));
    }

    #[test]
    fn metallb_url_names_the_pinned_version() {
        assert!(METALLB_MANIFEST_URL.contains(METALLB_VERSION));
        assert_eq!(METALLB_MANIFEST_SHA256.len(), 64);
    }
}
