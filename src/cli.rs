//! Command-line definitions, and nothing else: clap types stop here. [`crate::commands`] turns them
//! into settings before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pki::KeyType;
use crate::plan::Phase;

/// Turn several Kubernetes clusters into one Istio mesh (multi-primary, multi-network), and prove it works.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,

    /// kubeconfig file (default: `KUBECONFIG`, which may list several files, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Where meshctl keeps its state (certificates, phase progress, kubeconfigs) [default:
    /// `MESHCTL_HOME`, else `$XDG_STATE_HOME/meshctl`, else `~/.local/state/meshctl`].
    #[arg(long, global = true, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create (or adopt) the clusters and join them into one mesh.
    Up(UpArgs),
    /// Remove what `up` created: the kind clusters it made (never others).
    Down(DownArgs),
    /// Per cluster and phase: what exists, what is ready, what is missing.
    Status(StatusArgs),
    /// Prove cross-cluster traffic from every cluster to every other, and locality failover.
    Verify(VerifyArgs),
    /// Certificate authorities in Istio's plug-in CA layout.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print (or apply) the remote secret that lets other istiods read a cluster, like
    /// `istioctl create-remote-secret`.
    RemoteSecret(RemoteSecretArgs),
    /// Check prerequisites: docker, kind, istioctl, inotify limits, memory.
    Doctor(DoctorArgs),
    /// Take a failed or misbehaving cluster out of the mesh without touching it: the other
    /// primaries stop reading it (its remote secrets are kept, to be put back by `rejoin`).
    Isolate(MembershipArgs),
    /// Bring an isolated cluster back: its remote secrets return to the other primaries (fresh
    /// ones where it answers), and every istiod is waited on until it syncs it.
    Rejoin(MembershipArgs),
    /// Move the mesh to another Istio release without an outage: a canary revision per cluster,
    /// one cluster at a time, each proven before the next (docs/upgrade.md).
    Upgrade(UpgradeArgs),
    /// Write one .tar.gz with what is needed to debug the mesh (no secret data), for a bug report.
    Diagnose(DiagnoseArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print meshctl's version and the pinned versions of what it installs.
    Version(VersionArgs),
}

/// Which clusters: a count of new kind clusters, a file, or existing contexts.
#[derive(Debug, Args, Clone, Default)]
pub struct TopologyArgs {
    /// The mesh of this many kind clusters, `cluster1..N` (`up` creates them; other commands
    /// use them).
    #[arg(long, value_name = "N", conflicts_with_all = ["config", "contexts"],
          allow_negative_numbers = true, value_parser = cluster_count)]
    pub clusters: Option<usize>,

    /// Read the topology from a meshctl.yaml file.
    #[arg(long, value_name = "FILE", conflicts_with = "contexts")]
    pub config: Option<PathBuf>,

    /// Use existing clusters, one per kubeconfig context (comma-separated; `--context CTX`, as
    /// kubectl spells it, for one).
    #[arg(long, visible_alias = "context", value_name = "CTX,..", value_delimiter = ',')]
    pub contexts: Vec<String>,

    /// Mesh ID shared by every cluster.
    #[arg(long, value_name = "ID")]
    pub mesh_id: Option<String>,

    /// The data plane: `sidecar` (the default) or `ambient` (ztunnel, no sidecars; multi-primary
    /// with a network per cluster only). Wins over `dataplane:` in meshctl.yaml.
    #[arg(long, value_enum, value_name = "MODE")]
    pub dataplane: Option<crate::topology::Dataplane>,
}

impl TopologyArgs {
    /// The same selection as command-line arguments, for commands meshctl suggests.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.clusters {
            out.extend(["--clusters".to_string(), n.to_string()]);
        }
        if let Some(path) = &self.config {
            out.extend(["--config".to_string(), path.display().to_string()]);
        }
        if !self.contexts.is_empty() {
            out.extend(["--contexts".to_string(), self.contexts.join(",")]);
        }
        if let Some(id) = &self.mesh_id {
            out.extend(["--mesh-id".to_string(), id.clone()]);
        }
        if let Some(dataplane) = self.dataplane {
            out.extend(["--dataplane".to_string(), dataplane.name().to_string()]);
        }
        out
    }
}

/// Output format of commands that report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable lines (progress on a terminal, plain lines otherwise).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of commands that print one document (`status`, `doctor`, `certs status`,
/// `version`): as kubectl prints objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DocumentFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// The document as JSON, on one line.
    Json,
    /// The document as YAML.
    Yaml,
}

fn phase_parser() -> impl TypedValueParser<Value = Phase> {
    PossibleValuesParser::new(Phase::ALL.map(Phase::name))
        .map(|s| s.parse::<Phase>().expect("listed names parse"))
}

fn key_type_parser() -> impl TypedValueParser<Value = KeyType> {
    PossibleValuesParser::new(["rsa-4096", "ecdsa-p256"]).map(|s| match s.as_str() {
        "ecdsa-p256" => KeyType::EcdsaP256,
        _ => KeyType::Rsa4096,
    })
}

/// Longest `--timeout` accepted: a bound past a day is a typo, not a wish.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `--istio-version`: a release such as 1.31.1 whose support window includes the pinned
/// Kubernetes.
fn parse_istio_version(text: &str) -> Result<String, String> {
    let version: crate::istio_version::IstioVersion = text.parse()?;
    crate::istio_version::check_supported(&version, crate::versions::KUBERNETES_MINOR)?;
    Ok(version.to_string())
}

/// `--timeout`: a duration such as `90s` or `5m`, at least a second and at most a day.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    if text.starts_with('-') {
        return Err(format!("`{text}` is negative: give a duration such as 90s or 5m"));
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 90s or 5m ({e})"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{text}` is shorter than 1s: nothing could finish in it"));
    }
    if d > MAX_TIMEOUT {
        return Err(format!("`{text}` is longer than 24h"));
    }
    Ok(d)
}

/// `--mesh-id`: a DNS-1123 label, as `up` requires (it names a folder of the work dir, so `..` or a
/// slash must never get through).
fn parse_mesh_id(text: &str) -> Result<String, String> {
    match crate::topology::dns1123_label_problem(text) {
        None => Ok(text.to_string()),
        Some(reason) => Err(format!("`{text}` {reason}")),
    }
}

/// `--lb-subnet`: an IPv4 CIDR such as `172.18.0.0/16`.
fn parse_subnet(text: &str) -> Result<ipnet::IpNet, String> {
    match text.parse::<ipnet::IpNet>() {
        // A docker network is a private block such as 172.18.0.0/16; a prefix shorter than 8
        // (0.0.0.0/0 at worst) would put pools on addresses of the internet.
        Ok(ipnet::IpNet::V4(net)) if net.prefix_len() < 8 => Err(format!(
            "`{text}` spans {}: name the docker network's subnet, such as 172.18.0.0/16",
            if net.prefix_len() == 0 {
                "every IPv4 address".to_string()
            } else {
                format!("2^{} addresses", 32 - net.prefix_len())
            }
        )),
        // Blocks no docker network can be (RFC 6890's special-purpose ones): MetalLB would hand
        // out addresses nothing routes to the kind nodes.
        Ok(ipnet::IpNet::V4(net)) if special_purpose(net.network()).is_some() => Err(format!(
            "`{text}` is {}, not a network docker can create: name the docker network's subnet, such as 172.18.0.0/16",
            special_purpose(net.network()).unwrap_or_default()
        )),
        Ok(net @ ipnet::IpNet::V4(_)) => Ok(net),
        Ok(_) => Err(format!(
            "`{text}` is IPv6; MetalLB pools are planned in an IPv4 subnet"
        )),
        Err(_) => Err(format!("`{text}` is not an IPv4 CIDR such as 172.18.0.0/16")),
    }
}

/// What an IPv4 block starting at `network` is reserved for, when it cannot be a docker network.
fn special_purpose(network: std::net::Ipv4Addr) -> Option<&'static str> {
    let first = network.octets()[0];
    if first == 0 {
        Some("\"this network\" (0.0.0.0/8)")
    } else if network.is_loopback() {
        Some("loopback (127.0.0.0/8)")
    } else if network.is_link_local() {
        Some("link-local (169.254.0.0/16)")
    } else if network.is_multicast() {
        Some("multicast (224.0.0.0/4)")
    } else if first >= 240 {
        Some("reserved (240.0.0.0/4)")
    } else {
        None
    }
}

/// `--restart-namespaces`: namespace names, as Kubernetes requires them (DNS-1123 labels).
fn parse_namespace(text: &str) -> Result<String, String> {
    match crate::topology::dns1123_label_problem(text) {
        None => Ok(text.to_string()),
        Some(reason) => Err(format!("namespace `{text}` {reason}")),
    }
}

/// `meshctl up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    /// Which clusters.
    pub topology: TopologyArgs,

    /// Run only these phases (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = phase_parser(), value_name = "PHASE,..")]
    pub only: Vec<Phase>,

    /// Skip these phases (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = phase_parser(), value_name = "PHASE,..")]
    pub skip: Vec<Phase>,

    /// Write the whole plan (certificates, every manifest, plan.json) to --out instead of applying it.
    #[arg(long, requires = "out")]
    pub dry_run: bool,

    /// Directory for --dry-run output.
    #[arg(long, value_name = "DIR", requires = "dry_run")]
    pub out: Option<PathBuf>,

    /// With --dry-run: write into --out even when it holds files that are not a meshctl plan.
    #[arg(long, requires = "dry_run")]
    pub overwrite: bool,

    /// Certificate directory (Istio layout); an existing root there is reused.
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,

    /// Key type for new certificate authorities.
    #[arg(long, value_parser = key_type_parser(), default_value = "rsa-4096")]
    pub key_type: KeyType,

    /// Subnet standing in for the docker `kind` network when planning without docker.
    #[arg(long, value_name = "CIDR", default_value = crate::ipam::KIND_SUBNET, value_parser = parse_subnet)]
    pub lb_subnet: ipnet::IpNet,

    /// Bound on each wait (e.g. 90s, 5m; from 1s to 24h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Duration,

    /// Accept an istioctl whose minor version differs from the pinned Istio.
    #[arg(long)]
    pub allow_version_skew: bool,

    /// The Istio release to install (over `istio.version` of meshctl.yaml): its istioctl is
    /// downloaded once, checked against the release's published sha256 and cached by version.
    #[arg(long, value_name = "VERSION", value_parser = parse_istio_version)]
    pub istio_version: Option<String>,

    /// Use this istioctl instead of downloading one (checked for the chosen version) or the one
    /// on PATH.
    #[arg(long, value_name = "PATH")]
    pub istioctl: Option<PathBuf>,

    /// Run every step of the selected phases, even where the clusters already hold what the plan
    /// wants (normally each phase runs only where its probe finds something missing or different).
    #[arg(long, conflicts_with = "dry_run")]
    pub force: bool,

    /// Take over objects meshctl would create that already exist without its label (a `cacerts`
    /// or Gateway you made): they are overwritten with meshctl's and become meshctl's, which
    /// `down --uninstall` removes. Without it, `up` refuses before changing anything.
    #[arg(long, conflicts_with = "dry_run")]
    pub adopt: bool,

    /// Use this MetalLB manifest instead of downloading the pinned one.
    #[arg(long, value_name = "FILE")]
    pub metallb_manifest: Option<PathBuf>,

    /// Use this Gateway API CRD manifest (the standard channel's `standard-install.yaml`)
    /// instead of downloading the pinned one (`--dataplane ambient`, in clusters without them).
    #[arg(long, value_name = "FILE")]
    pub gateway_api_crds: Option<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `meshctl upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// The Istio release to move the mesh to (at most two minor releases above the one it runs);
    /// with an upgrade under way, the same release resumes it.
    #[arg(long, value_name = "VERSION", value_parser = parse_istio_version,
          required_unless_present_any = ["finish", "rollback"])]
    pub to: Option<String>,
    /// Remove the old revision once every cluster runs the new one and no pod runs an old proxy
    /// (after the upgrade, when given with --to).
    #[arg(long, conflicts_with = "rollback")]
    pub finish: bool,
    /// Undo the upgrade under way: injection, gateways and exposed istiod back on the old
    /// revision, the new one removed, last cluster first.
    #[arg(long, conflicts_with = "to")]
    pub rollback: bool,
    /// Restart the Deployments of these namespaces in each cluster once its injection moved, so
    /// they run the new proxies (workloads are otherwise left to you).
    #[arg(long, value_name = "NS,..", value_delimiter = ',', value_parser = parse_namespace)]
    pub restart_namespaces: Vec<String>,
    /// Do not call across every pair of clusters after each cluster (the other gates still hold).
    #[arg(long)]
    pub no_verify: bool,
    /// --finish even while pods still run proxies of the old revision (they lose their control
    /// plane).
    #[arg(long, requires = "finish")]
    pub force: bool,
    /// Use this istioctl (of the target release) instead of downloading it.
    #[arg(long, value_name = "PATH")]
    pub istioctl: Option<PathBuf>,
    /// Write every cluster's IstioOperators and commands, in order, to --out; change nothing.
    #[arg(long, requires = "out", requires = "to")]
    pub dry_run: bool,
    /// Directory for --dry-run output.
    #[arg(long, value_name = "DIR", requires = "dry_run")]
    pub out: Option<PathBuf>,
    /// Bound on each wait.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Output format: `text` lines, or `json`, one event object per line.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `meshctl down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Mesh whose clusters to delete (default: the config's meshID, else mesh1).
    #[arg(long, value_name = "ID", value_parser = parse_mesh_id)]
    pub mesh_id: Option<String>,
    /// Also delete meshctl's state, the certificate authorities included.
    #[arg(long)]
    pub purge: bool,
    /// Also remove from the clusters what meshctl put there (remote secrets, the reader account
    /// and its token, the expose Gateway, the east-west gateway and Istio via `istioctl uninstall`
    /// of the same IstioOperators, cacerts), never what it did not create. For clusters meshctl
    /// did not create; kind clusters it created are deleted whole.
    #[arg(long)]
    pub uninstall: bool,
    /// The mesh `up --config FILE` made (its `meshID`); with --uninstall, also its clusters.
    #[arg(long, value_name = "FILE", conflicts_with = "contexts")]
    pub config: Option<PathBuf>,
    /// With --uninstall: the clusters, one per kubeconfig context (`--context` for one).
    #[arg(
        long,
        visible_alias = "context",
        value_name = "CTX,..",
        value_delimiter = ',',
        requires = "uninstall"
    )]
    pub contexts: Vec<String>,
    /// Do not ask for confirmation (needed with --uninstall when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `meshctl status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Look again until the mesh is ready, for at most this long (e.g. 2m), as `cilium status
    /// --wait` does; without it, one look.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub wait: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: DocumentFormat,
}

/// `meshctl isolate` and `meshctl rejoin`.
#[derive(Debug, Args)]
pub struct MembershipArgs {
    /// The cluster, by its name in the mesh.
    pub cluster: String,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Bound on each wait (rejoin waits until every istiod reports the cluster synced); a cluster
    /// that does not answer within 10 s (or this, if shorter) is named as down.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Do not ask before `isolate` of a remote (its control plane can then no longer authenticate
    /// the remote's proxies: new pods never become ready; certificates lapse within a day).
    /// `rejoin` asks nothing.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Output format: `text` lines, or `json`, one event object per line.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `meshctl verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    /// Which clusters.
    pub topology: TopologyArgs,
    /// Also test locality failover (the same as `--locality failover`).
    #[arg(long)]
    pub failover: bool,
    /// Also test locality load balancing: `failover` (drain the local instance, traffic moves to
    /// the failover region) or `distribute` (an 80/20 weighted split between two regions, checked
    /// over at least 200 calls within ±10 points). Repeatable.
    #[arg(long, value_enum, value_name = "MODE")]
    pub locality: Vec<LocalityCheck>,
    /// Expect every client to be answered only by its own cluster: the topology's meshConfig
    /// marks the helloworld host cluster-local (serviceSettings clusterLocal).
    #[arg(long)]
    pub cluster_local: bool,
    /// Apply per-cluster subsets (a DestinationRule subset per `topology.istio.io/cluster` and a
    /// VirtualService routing each cluster's callers to their own) and expect local answers only.
    #[arg(long)]
    pub per_cluster_subsets: bool,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Keep the verification workloads afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Calls from each cluster (default: 10 per cluster, at least 20).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000), allow_negative_numbers = true)]
    pub calls: Option<u32>,
    /// Bound on each wait (e.g. 90s, 5m; from 1s to 24h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// A locality load-balancing check of `verify --locality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalityCheck {
    /// Locality failover.
    Failover,
    /// Weighted locality distribution.
    Distribute,
}

/// `meshctl certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a shared root CA and one intermediate CA per cluster (Istio's tools/certs layout).
    Gen(CertsGenArgs),
    /// Per cluster, the plug-in CA in `cacerts`: subject, serial, expiry, its chain to the mesh's
    /// root, and whether every cluster shares that root.
    Status(CertsStatusArgs),
    /// Issue new intermediates under the same root, update `cacerts` and restart istiod.
    Rotate(CertsRotateArgs),
}

/// `meshctl certs status`.
#[derive(Debug, Args)]
pub struct CertsStatusArgs {
    #[command(flatten)]
    /// Which clusters.
    pub topology: TopologyArgs,
    /// The CA directory (default: the one `up` used for this mesh).
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Fail when a certificate expires within this many days.
    #[arg(long, value_name = "DAYS", default_value_t = 30, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=36500))]
    pub warn_days: u32,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: DocumentFormat,
}

/// `meshctl certs rotate`.
#[derive(Debug, Args)]
pub struct CertsRotateArgs {
    #[command(flatten)]
    /// Which clusters.
    pub topology: TopologyArgs,
    /// Rotate only this cluster's intermediate (repeatable; default: every cluster).
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: Vec<String>,
    /// Start a root rotation instead: make the next root and give every cluster a trust bundle of
    /// both roots (step 1 of 3 of Istio's multi-root procedure; docs/certificates.md).
    #[arg(long, conflicts_with = "cluster")]
    pub root: bool,
    /// The CA directory (default: the one `up` used for this mesh).
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Key type of the new intermediates.
    #[arg(long, value_parser = key_type_parser(), default_value = "rsa-4096")]
    pub key_type: KeyType,
    /// Validity of the new intermediates in days.
    #[arg(long, value_name = "DAYS", default_value_t = crate::pki::DEFAULT_INTERMEDIATE_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36500), allow_negative_numbers = true)]
    pub intermediate_days: u32,
    /// Bound on istiod's restart in each cluster.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `meshctl certs gen`.
#[derive(Debug, Args)]
pub struct CertsGenArgs {
    /// Intermediates for `cluster1..N`.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "cluster",
        required_unless_present = "cluster",
        allow_negative_numbers = true,
        value_parser = cluster_count
    )]
    pub clusters: Option<usize>,

    /// Intermediate for this cluster (repeatable).
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: Vec<String>,

    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Key type.
    #[arg(long, value_parser = key_type_parser(), default_value = "rsa-4096")]
    pub key_type: KeyType,

    /// Root CA validity in days.
    #[arg(long, value_name = "DAYS", default_value_t = crate::pki::DEFAULT_ROOT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36500), allow_negative_numbers = true)]
    pub root_days: u32,

    /// Intermediate CA validity in days.
    #[arg(long, value_name = "DAYS", default_value_t = crate::pki::DEFAULT_INTERMEDIATE_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36500), allow_negative_numbers = true)]
    pub intermediate_days: u32,

    /// Re-issue the named intermediates even when they exist, signed by the existing root (which
    /// is never replaced by this flag).
    #[arg(long)]
    pub force: bool,

    /// Replace the root CA too. Every cluster with an intermediate in the directory must be named
    /// (all of them are re-issued), and every cluster then needs its new `cacerts`.
    #[arg(long)]
    pub replace_root: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Format of a printed remote secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ManifestFormat {
    /// YAML, as istioctl prints it.
    #[default]
    Yaml,
    /// JSON.
    Json,
}

/// What a remote secret is for, as istioctl's `create-remote-secret --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SecretType {
    /// A cluster an istiod reads (`istio-remote-secret-<name>`, the reader account's token).
    #[default]
    Remote,
    /// The config cluster of an external istiod (`istio-kubeconfig`, the `istiod` account's
    /// token; the account must exist: the config cluster's Istio makes it).
    Config,
}

/// `meshctl remote-secret`.
#[derive(Debug, Args)]
pub struct RemoteSecretArgs {
    /// Context of the cluster to be read (the source).
    #[arg(long, value_name = "CTX")]
    pub context: String,
    /// Istio cluster name of the source (its `multiCluster.clusterName`).
    #[arg(long, value_name = "CLUSTER")]
    pub name: String,
    /// API server address reachable from the other clusters (e.g. https://172.18.0.3:6443).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Apply the secret to these contexts instead of printing it.
    #[arg(long, value_delimiter = ',', value_name = "CTX,..")]
    pub apply_to: Vec<String>,
    /// What the secret is for.
    #[arg(long = "type", value_enum, default_value_t)]
    pub secret_type: SecretType,
    /// Istio's namespace: where the account is read in the source, and where the secret goes
    /// (`external-istiod` for an external control plane).
    #[arg(long, value_name = "NS", default_value = crate::topology::ISTIO_NAMESPACE)]
    pub namespace: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ManifestFormat,
}

/// `meshctl doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    /// The mesh the checks are sized for (subnets, memory).
    pub topology: TopologyArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: DocumentFormat,
}

/// `meshctl diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    /// Which clusters.
    pub topology: TopologyArgs,
    /// The archive to write (default: meshctl-diagnose-<mesh>-<time>.tar.gz here).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace the `--out` file if it exists (it is never replaced otherwise).
    #[arg(long)]
    pub force: bool,
    /// Bound on collecting each cluster.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `meshctl completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `meshctl version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: DocumentFormat,
}

/// `--clusters N`: a whole number; a negative one is named as such instead of being taken for a
/// flag (the topology checks the range, 1 to 16, with every other problem).
fn cluster_count(value: &str) -> Result<usize, String> {
    match value.trim().parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("`{value}` is not a valid number of clusters (1 to 16)")),
        Ok(n) => usize::try_from(n).map_err(|_| format!("`{value}` is too large")),
        Err(_) => Err(format!("`{value}` is not a whole number")),
    }
}
