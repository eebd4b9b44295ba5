//! What a cluster holds of Istio's revisions, read the way istioctl reads it
//! (`istioctl/pkg/tag/util.go`): a revision is installed where its injector webhook is (label
//! `istio.io/rev`, no `istio.io/tag`: `GetWebhooksWithRevision`); injection points where the
//! `default` tag's webhook says (`istio.io/rev` of `istio-revision-tag-default`), except in
//! namespaces labelled with a revision by its name; the east-west gateway runs the revision its Deployment is labelled with (the gateway chart labels it).

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::revision::{self, DEFAULT_TAG_WEBHOOK, Revision};
use crate::topology::GATEWAY_NAME;
use crate::topology::ISTIO_NAMESPACE;

/// One installed revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionHeld {
    pub revision: Revision,
    /// The release its istiod's image is tagged with (a remote runs no istiod: none).
    pub version: Option<String>,
}

/// One cluster's revisions, injection and gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Held {
    pub revisions: Vec<RevisionHeld>,
    /// Where the `default` tag points; none where no tag webhook exists.
    pub tag: Option<Revision>,
    /// The east-west gateway's revision; none without a gateway.
    pub gateway: Option<Revision>,
    /// Namespaces labelled with an installed revision by its name (`istio.io/rev=1-30-3`, not a
    /// tag): injected by that revision whatever the `default` tag points at.
    pub pinned_namespaces: Vec<(String, Revision)>,
}

impl Held {
    /// The revision that injects namespaces labelled `istio-injection=enabled`: the `default`
    /// tag's, or without a tag the unrevisioned install's own webhook.
    pub fn injection(&self) -> Revision {
        self.tag.clone().unwrap_or_default()
    }

    pub fn has(&self, revision: &Revision) -> bool {
        self.revisions.iter().any(|r| &r.revision == revision)
    }

    /// The namespaces pinned to a revision other than `revision`.
    pub fn pinned_elsewhere(&self, revision: &Revision) -> Vec<&str> {
        self.pinned_namespaces
            .iter()
            .filter(|(_, r)| r != revision)
            .map(|(ns, _)| ns.as_str())
            .collect()
    }
}

pub async fn gather(client: &kube::Client) -> Result<Held, kube::Error> {
    let webhooks = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default().labels(revision::LABEL))
        .await?
        .items;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ISTIO_NAMESPACE);
    let label_of =
        |meta: &kube::api::ObjectMeta, key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
    let mut revisions = Vec::new();
    let mut tag = None;
    for webhook in &webhooks {
        let Some(rev) = label_of(&webhook.metadata, revision::LABEL) else {
            continue;
        };
        let rev = Revision::from_label(&rev);
        if label_of(&webhook.metadata, "istio.io/tag").is_some() {
            if webhook.metadata.name.as_deref() == Some(DEFAULT_TAG_WEBHOOK) {
                tag = Some(rev);
            }
            continue;
        }
        let version = deployments
            .get_opt(&rev.istiod())
            .await?
            .and_then(|d| d.spec)
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.into_iter().next())
            .and_then(|c| c.image)
            .map(|image| image_tag(&image));
        revisions.push(RevisionHeld {
            revision: rev,
            version,
        });
    }
    revisions.sort_by(|a, b| a.revision.cmp(&b.revision));
    let gateway = deployments
        .get_opt(GATEWAY_NAME)
        .await?
        .map(|d| Revision::from_label(&label_of(&d.metadata, revision::LABEL).unwrap_or_default()));
    // `istio.io/rev=default` names the `default` tag, never a revision by name.
    let pinned_namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(revision::LABEL))
        .await?
        .items
        .into_iter()
        .filter_map(|ns| {
            let rev = Revision::from_label(&label_of(&ns.metadata, revision::LABEL)?);
            let by_name = !rev.is_default() && revisions.iter().any(|r| r.revision == rev);
            by_name.then(|| (ns.metadata.name.unwrap_or_default(), rev))
        })
        .collect();
    Ok(Held {
        revisions,
        tag,
        gateway,
        pinned_namespaces,
    })
}

/// Image variants Istio's charts append to the release tag (`values.global.variant`, "Currently
/// supported are: [debug, distroless]"): the same release, another base image.
const IMAGE_VARIANTS: [&str; 2] = ["distroless", "debug"];

/// `docker.io/istio/pilot:1.31.1@sha256:…` → `1.31.1`, `…:1.31.1-distroless` → `1.31.1`;
/// `unknown` without a tag.
pub fn image_tag(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => IMAGE_VARIANTS
            .iter()
            .find_map(|v| tag.strip_suffix(&format!("-{v}")))
            .unwrap_or(tag)
            .to_string(),
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_istiod_image_tag_is_its_release() {
        assert_eq!(image_tag("docker.io/istio/pilot:1.31.1"), "1.31.1");
        assert_eq!(image_tag("docker.io/istio/pilot:1.31.1-distroless"), "1.31.1");
        assert_eq!(image_tag("docker.io/istio/pilot:1.31.1-debug"), "1.31.1");
        assert_eq!(image_tag("docker.io/istio/pilot:1.31.0-beta.0"), "1.31.0-beta.0");
        assert_eq!(
            image_tag("registry.istio.io/release/pilot:1.32.0@sha256:abc"),
            "1.32.0"
        );
        assert_eq!(image_tag("localhost:5000/pilot"), "unknown");
    }
}
