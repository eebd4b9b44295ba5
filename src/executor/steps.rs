//! One method per kind of [`Step`]: what running it means, in one cluster. Argument lists of
//! external programs are built in `tools/`; waits are `kube::wait` functions given what to wait for.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::Executor;
use crate::kube::apply::{Applied, Applier, Change};
use crate::kube::{FIELD_MANAGER, wait};
use crate::phases::clusters::api_endpoint;
use crate::phases::eastwest::GATEWAY_NAME;
use crate::phases::istio::{DISCOVERY_ADDRESS_UNKNOWN, INSTALLED_DIGEST, NAMESPACE as ISTIO_NAMESPACE};
use crate::plan::{Condition, RecordOn, Step};
use crate::remote_secret;
use crate::tools::RunOptions;
use crate::tools::docker::Docker;
use crate::tools::{istioctl, kind, kind::Kind};
use crate::topology::Cluster;
use crate::{kubeconfig, upstream};

/// `3 objects created, 1 unchanged`, or the objects by name when there are few.
fn applied_detail(applied: &[Applied]) -> Option<String> {
    let word = Change::as_str;
    if applied.len() <= 2 {
        let parts: Vec<String> = applied
            .iter()
            .map(|a| format!("{} {}", a.object, word(a.change)))
            .collect();
        return (!parts.is_empty()).then(|| parts.join(", "));
    }
    let parts: Vec<String> = [Change::Created, Change::Updated, Change::Unchanged]
        .into_iter()
        .map(|c| (applied.iter().filter(|a| a.change == c).count(), word(c)))
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} objects {w}"))
        .collect();
    Some(parts.join(", "))
}

impl Executor {
    /// Runs one step in one cluster; returns a short detail for the phase's line.
    pub(super) async fn execute(&self, cluster: &Cluster, step: &Step) -> Result<Option<String>> {
        match step {
            Step::CreateKindCluster {
                name,
                config,
                wait_secs,
            } => self.create_kind_cluster(name, config, *wait_secs).await,
            Step::IstioctlInstall {
                context,
                file,
                record_on,
                timeout_secs,
            } => {
                self.istioctl_install(cluster, context, file, record_on, *timeout_secs)
                    .await
            }
            Step::Apply { file } => {
                let text = self.artifact_text(file)?;
                let applied = Applier::new(self.client(cluster).await?)
                    .with_adoption(self.settings.adopt)
                    .apply_yaml(&text, file)
                    .await?;
                Ok(applied_detail(&applied))
            }
            Step::ApplyPluggedCa { file } => self.apply_plugged_ca(cluster, file).await,
            Step::AwaitAdmission { file } => {
                let text = self.artifact_text(file)?;
                let tries = Applier::new(self.client(cluster).await?)
                    .with_adoption(self.settings.adopt)
                    .await_admission(&text, file, self.settings.timeout)
                    .await?;
                Ok((tries > 1).then(|| format!("webhook answered after {tries} tries")))
            }
            Step::ApplyUpstream { name, url, sha256 } => {
                self.apply_upstream(cluster, name, url, sha256).await
            }
            Step::Wait { until } => self.wait(cluster, until).await,
            Step::ImportKubeconfig {
                kind_cluster,
                context,
            } => self.import_kubeconfig(kind_cluster, context).await.map(|()| None),
            Step::RecordApiEndpoint { container, network } => {
                let ip = Docker::new(&self.runner).container_ip(container, network).await?;
                let endpoint = api_endpoint(&ip.to_string());
                self.state.update(|s| {
                    s.clusters.entry(cluster.name.clone()).or_default().api_endpoint = Some(endpoint.clone())
                })?;
                // Remote secrets built earlier in this run carry the old address.
                self.secrets.lock().expect("secrets lock").remove(&cluster.name);
                Ok(Some(format!("API server {endpoint}")))
            }
            Step::RoutePeers { node, network, peers } => {
                let docker = Docker::new(&self.runner);
                let mut done = Vec::new();
                for peer in peers {
                    let via = docker.container_ip(&peer.node, network).await?;
                    for cidr in &peer.cidrs {
                        docker.route_replace(node, cidr, via).await?;
                    }
                    done.push(format!("{} via {via} ({})", peer.cidrs.join(", "), peer.cluster));
                }
                Ok(Some(format!("routes {}", done.join("; "))))
            }
            Step::LabelNodes { labels, overwrite } => self.label_nodes(cluster, labels, *overwrite).await,
            Step::PruneRemoteSecrets { keep } => self.prune_remote_secrets(cluster, keep).await,
            Step::RemoteSecret { source } => {
                self.refuse_foreign_remote_secret(cluster, source).await?;
                let text = self.remote_secret_of(source).await?;
                let applied = Applier::new(self.client(cluster).await?)
                    .with_adoption(self.settings.adopt)
                    .apply_yaml(&text, &crate::phases::remote_secrets::secret_name(source))
                    .await?;
                Ok(applied_detail(&applied))
            }
        }
    }

    /// Applies `cacerts`; when it changed one already there and istiod runs, restarts istiod and
    /// waits for the new pods (see [`Step::ApplyPluggedCa`]).
    async fn apply_plugged_ca(&self, cluster: &Cluster, file: &str) -> Result<Option<String>> {
        let text = self.artifact_text(file)?;
        let client = self.client(cluster).await?;
        let applied = Applier::new(client.clone())
            .with_adoption(self.settings.adopt)
            .apply_yaml(&text, file)
            .await?;
        let replaced = applied
            .iter()
            .any(|a| a.change == crate::kube::apply::Change::Updated);
        let namespace = crate::phases::istio::NAMESPACE;
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(client.clone(), namespace);
        if !replaced || deployments.get_opt("istiod").await?.is_none() {
            return Ok(applied_detail(&applied));
        }
        crate::kube::apply::rollout_restart(&client, namespace, "istiod").await?;
        wait::rollout_complete(&client, namespace, "istiod", self.settings.timeout).await?;
        Ok(Some("cacerts replaced; istiod restarted to sign with it".into()))
    }

    /// The remote secret of `source` in `cluster` exists and another tool applied it: it is not
    /// meshctl's to overwrite (unless `--adopt`).
    async fn refuse_foreign_remote_secret(&self, cluster: &Cluster, source: &str) -> Result<()> {
        if self.settings.adopt {
            return Ok(());
        }
        let name = crate::phases::remote_secrets::secret_name(source);
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client(cluster).await?, crate::phases::istio::NAMESPACE);
        match secrets.get_opt(&name).await? {
            Some(s) if crate::phases::remote_secrets::meshctl_secret_for(&s).is_none() => {
                Err(crate::kube::KubeError::Foreign {
                    object: format!("Secret {}/{name}", crate::phases::istio::NAMESPACE),
                }
                .into())
            }
            _ => Ok(()),
        }
    }

    async fn client(&self, cluster: &Cluster) -> Result<kube::Client> {
        Ok(self.clients.get(&cluster.context).await?)
    }

    fn artifact_text(&self, file: &str) -> Result<String> {
        std::fs::read_to_string(self.settings.plan_dir.join(file))
            .with_context(|| format!("cannot read `{file}`"))
    }

    /// How planned programs run: in the plan directory, bounded, with `KUBECONFIG` set when given.
    fn tool_options(&self, kubeconfig: Option<&Path>) -> RunOptions {
        RunOptions {
            cwd: Some(self.settings.plan_dir.clone()),
            timeout: Some(self.settings.tool_timeout),
            env: kubeconfig
                .map(|p| ("KUBECONFIG".to_string(), p.to_string_lossy().into_owned()))
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    async fn create_kind_cluster(&self, name: &str, config: &str, wait_secs: u64) -> Result<Option<String>> {
        if Kind::new(&self.runner)
            .clusters()
            .await?
            .iter()
            .any(|c| c == name)
        {
            // Reused, and never deleted by `down`: meshctl did not create it.
            return Ok(Some(format!("kind cluster `{name}` exists, reused")));
        }
        let options = self.tool_options(Some(&self.settings.kind_kubeconfig));
        self.runner
            .run("kind", &kind::create_args(name, config, wait_secs), &options)
            .await?;
        self.state
            .update(|s| s.created_kind_clusters.insert(name.to_string()))?;
        Ok(Some(format!("kind cluster `{name}` created")))
    }

    /// `istioctl install`, then the digest of the file it installed, recorded on `deployment` as an
    /// annotation (meshctl's own field manager, so istioctl's next apply leaves it alone).
    async fn istioctl_install(
        &self,
        cluster: &Cluster,
        context: &str,
        file: &str,
        record_on: &RecordOn,
        timeout_secs: u64,
    ) -> Result<Option<String>> {
        if self.artifact_text(file)?.contains(DISCOVERY_ADDRESS_UNKNOWN) {
            let primary = cluster.primary.as_deref().unwrap_or("its primary");
            return Err(anyhow!(
                "{file}: the east-west gateway of `{primary}` has no IP recorded yet, and this remote's istiod address is that IP; run `meshctl up` so `{primary}`'s eastwest phase completes first"
            ));
        }
        // Its version was checked before anything changed. istioctl reads KUBECONFIG: point it at
        // the file meshctl was given.
        let options = self.tool_options(self.settings.kubeconfig_flag.as_deref());
        self.runner
            .run(
                "istioctl",
                &istioctl::install_args(context, file, timeout_secs),
                &options,
            )
            .await?;
        let digest = crate::plan::digest(&self.artifact_text(file)?);
        let client = self.client(cluster).await?;
        let patch = serde_json::json!({"metadata": {"annotations": {INSTALLED_DIGEST: digest}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patched = match record_on {
            RecordOn::Deployment(name) => Api::<Deployment>::namespaced(client, ISTIO_NAMESPACE)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            RecordOn::Service(name) => Api::<Service>::namespaced(client, ISTIO_NAMESPACE)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        patched.with_context(|| {
            format!("cannot record the installed digest on {record_on} in {ISTIO_NAMESPACE}")
        })?;
        Ok(None)
    }

    async fn apply_upstream(
        &self,
        cluster: &Cluster,
        name: &str,
        url: &str,
        sha256: &str,
    ) -> Result<Option<String>> {
        let cell = self
            .manifests
            .lock()
            .expect("manifests lock")
            .entry(url.to_string())
            .or_default()
            .clone();
        let fetched = cell
            .get_or_init(|| async {
                upstream::fetch(
                    &self.runner,
                    url,
                    sha256,
                    self.settings.metallb_manifest.as_deref(),
                    &self.settings.cache_dir,
                )
                .await
                .map_err(|e| e.to_string())
            })
            .await;
        let text = fetched.as_ref().map_err(|e| anyhow!("{e}"))?;
        let applied = Applier::new(self.client(cluster).await?)
            .with_adoption(self.settings.adopt)
            .apply_yaml(text, name)
            .await?;
        Ok(applied_detail(&applied).map(|d| format!("{name}: {d}")))
    }

    /// Waits for `until` with the run's timeout.
    async fn wait(&self, cluster: &Cluster, until: &Condition) -> Result<Option<String>> {
        let client = self.client(cluster).await?;
        let timeout = self.settings.timeout;
        match until {
            Condition::NodesReady => wait::nodes_ready(&client, timeout).await?,
            Condition::DeploymentAvailable { namespace, name } => {
                wait::deployment_ready(&client, namespace, name, timeout).await?
            }
            Condition::DaemonSetReady { namespace, name } => {
                wait::daemonset_ready_on_every_node(&client, namespace, name, timeout).await?
            }
            Condition::WebhookCaBundle { kind, name } => {
                wait::webhook_has_ca_bundle(&client, kind, name, timeout).await?
            }
            Condition::WebhookEndpointReady { kind, name } => {
                wait::webhook_endpoint_ready(&client, kind, name, timeout).await?
            }
            Condition::LoadBalancerIp { namespace, name } => {
                let address = wait::load_balancer_address(&client, namespace, name, timeout).await?;
                if name == GATEWAY_NAME {
                    self.state.update(|s| {
                        s.clusters.entry(cluster.name.clone()).or_default().eastwest_ip =
                            Some(address.clone())
                    })?;
                }
                return Ok(Some(format!("{name} at {address}")));
            }
            Condition::RemoteClustersSynced { clusters } => {
                return match crate::istiod::remote_clusters_synced(&client, clusters, timeout).await {
                    Ok(pod) => Ok(Some(format!(
                        "istiod reports {} synced ({pod})",
                        clusters.join(", ")
                    ))),
                    Err((err, missing)) => Err(self.unsynced_error(cluster, err, &missing)),
                };
            }
        }
        Ok(None)
    }

    async fn import_kubeconfig(&self, kind_cluster: &str, context: &str) -> Result<()> {
        let text = Kind::new(&self.runner).kubeconfig(kind_cluster).await?;
        let _guard = self.kubeconfig_lock.lock().await;
        let target = &self.settings.kubeconfig_target;
        kubeconfig::import_context(target, &text, &format!("kind-{kind_cluster}"), context)
            .with_context(|| format!("cannot import context `{context}` into `{}`", target.display()))?;
        self.state.update(|s| {
            s.kubeconfig = Some(target.clone());
            s.kubeconfig_entries.insert(context.to_string());
        })?;
        self.clients.forget(context);
        Ok(())
    }

    async fn label_nodes(
        &self,
        cluster: &Cluster,
        labels: &BTreeMap<String, String>,
        overwrite: bool,
    ) -> Result<Option<String>> {
        let nodes: Api<Node> = Api::all(self.client(cluster).await?);
        let list = nodes
            .list(&ListParams::default())
            .await
            .context("cannot list nodes")?;
        let mut changed = 0;
        for node in list.items {
            let current = node.metadata.labels.clone().unwrap_or_default();
            let wanted: BTreeMap<&String, &String> = labels
                .iter()
                .filter(|(k, v)| match current.get(*k) {
                    None => true,
                    Some(have) => overwrite && have != *v,
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let name = node.metadata.name.clone().unwrap_or_default();
            let patch = serde_json::json!({"metadata": {"labels": wanted}});
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("cannot label node `{name}`"))?;
            changed += 1;
        }
        Ok((changed > 0).then(|| format!("{changed} node(s) labelled")))
    }

    async fn prune_remote_secrets(&self, cluster: &Cluster, keep: &[String]) -> Result<Option<String>> {
        use crate::phases::remote_secrets::{meshctl_secret_for, remote_secrets_selector};
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client(cluster).await?, remote_secret::NAMESPACE);
        let selector = remote_secrets_selector();
        let list = secrets
            .list(&selector)
            .await
            .context("cannot list remote secrets")?;
        let mut pruned = Vec::new();
        for secret in &list.items {
            let Some(source) = meshctl_secret_for(secret).filter(|s| !keep.contains(s)) else {
                continue;
            };
            let name = secret.metadata.name.clone().unwrap_or_default();
            secrets
                .delete(&name, &Default::default())
                .await
                .with_context(|| format!("cannot delete secret {}/{name}", remote_secret::NAMESPACE))?;
            pruned.push(source);
        }
        Ok((!pruned.is_empty()).then(|| format!("pruned the remote secrets of {}", pruned.join(", "))))
    }

    /// Why istiod in `cluster` does not see its peers: each pair, with the address its remote secret
    /// makes istiod dial, and what to check.
    fn unsynced_error(
        &self,
        cluster: &Cluster,
        err: wait::WaitError,
        missing: &[(String, String)],
    ) -> anyhow::Error {
        if missing
            .iter()
            .all(|(_, status)| status == crate::istiod::NOT_ASKED)
        {
            // istiod could not be asked at all: the peers' addresses are not the question.
            return anyhow::Error::new(err).context(format!(
                "istiod in `{}` could not be asked which clusters it has synced\nhint: meshctl reads istiod's /debug/clusterz through a port-forward to a running istiod pod, as `istioctl remote-clusters` does; `kubectl --context {} -n istio-system get pods -l app=istiod` shows whether one runs",
                cluster.name, cluster.context
            ));
        }
        let state = self.state.snapshot();
        let pairs: Vec<String> = missing
            .iter()
            .map(|(peer, status)| {
                let address = crate::phases::remote_secrets::api_address(
                    &self.mesh,
                    &state,
                    self.settings.kubeconfig_flag.as_deref(),
                    peer,
                )
                .unwrap_or_else(|_| "the server in its kubeconfig".into());
                format!(
                    "istiod in `{}` reports `{peer}` {status}; its remote secret points at {address}",
                    cluster.name
                )
            })
            .collect();
        anyhow::Error::new(err).context(format!(
            "{}\nhint: that address must be reachable from `{}`'s pods (never 127.0.0.1); `istioctl remote-clusters --context {}` shows the same view",
            pairs.join("\n"),
            cluster.name,
            cluster.context
        ))
    }

    /// The remote secret of `source`, built once per run however many clusters receive it.
    async fn remote_secret_of(&self, source: &str) -> Result<String> {
        let cell = self
            .secrets
            .lock()
            .expect("secrets lock")
            .entry(source.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let cluster = self
                .mesh
                .cluster(source)
                .ok_or_else(|| anyhow!("cluster `{source}` is not in the topology"))?;
            let server = crate::phases::remote_secrets::api_address(
                &self.mesh,
                &self.state.snapshot(),
                self.settings.kubeconfig_flag.as_deref(),
                source,
            )
            .map_err(|e| anyhow!(e))?;
            let client = self.client(cluster).await?;
            let creds = remote_secret::reader_credentials(&client, source, self.settings.timeout).await?;
            Ok(remote_secret::render_secret(source, &server, &creds)?)
        })
        .await
        .cloned()
    }
}
