//! meshctl: several Kubernetes clusters into one Istio mesh (multi-primary, multi-network).
//!
//! The data flows one way, and the modules follow it (docs/architecture.md has the layers, which
//! `tests/architecture.rs` checks):
//!
//! ```text
//! flags / meshctl.yaml ─► topology ─► planner ─► phases (one type each) ─► executor ─► clusters
//!                             │           │                                    │
//!                             │   render (templates/), pki, ipam       kube API, tools (kind, docker, istioctl)
//!                             │           (pure)
//!                             └──────────────────────────────────────────► report
//! ```
//!
//! * [`topology`]: what to build, validated as a whole.
//! * [`pki`]: root and intermediate CAs in Istio's plug-in layout.
//! * [`plan`]: the plan as data; [`planner`] builds it from [`phases`], where each phase is one
//!   type that plans, probes, runs its own steps, describes them and removes itself.
//! * [`render`]: manifests from the embedded templates; [`ipam`]: MetalLB address pools.
//! * [`dry_run`]: the plan written to disk.
//! * [`executor`]: runs a plan, phase by phase; [`uninstall`] removes it, last phase first.
//! * [`kube`] and [`tools`]: the I/O, behind `kube::Clients` and the `tools::ToolRunner` seam.
//! * [`verification`]: proves traffic flows; [`istiod`]: what istiod says of the mesh.
//! * [`report`]: what the user sees.

pub mod atomic_file;
pub mod check;
pub mod cli;
pub mod commands;
pub mod diagnostic_bundle;
pub mod dry_run;
pub mod executor;
pub mod exit;
pub mod ipam;
pub mod isolation;
pub mod istio_config;
pub mod istio_release;
pub mod istio_revisions;
pub mod istio_version;
pub mod istioctl_choice;
pub mod istiod;
pub mod kube;
pub mod kubeconfig;
pub mod memo;
pub mod mesh_ca;
pub mod mesh_dir;
pub mod mesh_health;
pub mod mesh_status;
pub mod phases;
pub mod pki;
pub mod plan;
pub mod planner;
pub mod plugged_ca;
pub mod probe;
pub mod remote_secret;
pub mod render;
pub mod report;
pub mod revision;
pub mod schedule;
pub mod state;
pub mod teardown;
pub mod tools;
pub mod topology;
pub mod uninstall;
pub mod upgrade;
pub mod upstream;
pub mod verification;
pub mod versions;
pub mod work_dir;
pub mod ztunnel;
