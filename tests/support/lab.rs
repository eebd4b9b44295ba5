//! A lab for end-to-end tests: N fake clusters with their controllers, fake tools on PATH, a
//! work folder, and the way to run `meshctl` against them.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use serde_json::Value;

use super::fake_api::FakeCluster;
use super::fake_api::controllers::ControllerOptions;
use super::fake_tools::{FakeToolOptions, FakeTools};
use super::meshctl_in;

/// The MetalLB manifest: the real v0.16.1 one from ../shared when it is there, else a small stand-in
/// with the objects meshctl waits on.
pub fn metallb_manifest() -> String {
    if let Some(dir) = super::schema::upstream_dir() {
        return std::fs::read_to_string(dir.join("metallb/v0.16.1/metallb-native.yaml")).unwrap();
    }
    let crd = |kind: &str, plural: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.metallb.io}}\nspec: {{group: metallb.io, scope: Namespaced, names: {{kind: {kind}, plural: {plural}, singular: {}}}, versions: [{{name: v1beta1, served: true, storage: true, schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}]}}\n---\n",
            kind.to_lowercase()
        )
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: metallb-system}}\n---\n{}{}\
apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: controller, namespace: metallb-system}}\nspec: {{selector: {{matchLabels: {{app: metallb}}}}, template: {{metadata: {{labels: {{app: metallb}}}}, spec: {{containers: [{{name: controller, image: quay.io/metallb/controller:v0.16.1}}]}}}}}}\n---\n\
apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: speaker, namespace: metallb-system}}\nspec: {{selector: {{matchLabels: {{app: metallb}}}}, template: {{metadata: {{labels: {{app: metallb}}}}, spec: {{containers: [{{name: speaker, image: quay.io/metallb/speaker:v0.16.1}}]}}}}}}\n---\n\
apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: metallb-webhook-configuration}}\nwebhooks: [{{name: ipaddresspoolvalidationwebhook.metallb.io, clientConfig: {{service: {{namespace: metallb-system, name: metallb-webhook-service}}}}, sideEffects: None, admissionReviewVersions: [v1]}}]\n",
        crd("IPAddressPool", "ipaddresspools"),
        crd("L2Advertisement", "l2advertisements")
    )
}

pub struct Lab {
    pub clusters: Vec<Arc<FakeCluster>>,
    pub tools: FakeTools,
    pub work: tempfile::TempDir,
}

impl Lab {
    pub fn new(n: usize, options: FakeToolOptions) -> Lab {
        let clusters: Vec<Arc<FakeCluster>> = (1..=n)
            .map(|i| {
                let c = Arc::new(FakeCluster::start(&format!("cluster{i}")));
                c.start_controllers(ControllerOptions::default());
                c
            })
            .collect();
        let tools = FakeTools::new(&clusters, options);
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("metallb-native.yaml"), metallb_manifest()).unwrap();
        Lab {
            clusters,
            tools,
            work,
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.work.path().join("kubeconfig")
    }

    /// Runs `meshctl` in the lab (for `up`: fast keys, a 20s bound, the lab's MetalLB manifest).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, true, &[])
    }

    /// Like [`Lab::run`], choosing whether `up` gets `--metallb-manifest`, with extra environment.
    pub fn run_with(&self, args: &[&str], manifest_file: bool, env: &[(&str, &str)]) -> Output {
        let kc = self.kubeconfig();
        let state = self.work.path().join("state");
        let manifest = self.work.path().join("metallb-native.yaml");
        let mut all = vec![
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--workdir",
            state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        if args.first() == Some(&"up") {
            all.extend_from_slice(&["--key-type", "ecdsa-p256"]);
            if !args.contains(&"--timeout") {
                all.extend_from_slice(&["--timeout", "20s"]);
            }
            if manifest_file {
                all.extend_from_slice(&["--metallb-manifest", manifest.to_str().unwrap()]);
            }
        }
        let path = self.tools.path_env();
        let cache = self.work.path().join("cache");
        let mut vars = vec![
            ("PATH", path.as_str()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
            ("CI", "true"),
        ];
        vars.extend_from_slice(env);
        meshctl_in(self.work.path(), &all, &vars)
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.work.path().join("state/mesh1/state.json")).unwrap(),
        )
        .unwrap()
    }

    pub fn writes(&self) -> usize {
        self.clusters
            .iter()
            .map(|c| c.requests().iter().filter(|r| !r.starts_with("GET")).count())
            .sum()
    }
}
