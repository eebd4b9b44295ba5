//! `meshctl up`.

use std::path::Path;

use anyhow::Result;

use super::{Exit, NotImplemented};
use crate::cli::UpArgs;

pub(super) fn run(args: UpArgs, _workdir: &Path) -> Result<Exit> {
    let _mesh = super::resolve_topology(&args.topology)?;
    Err(NotImplemented {
        what: "meshctl up".into(),
    }
    .into())
}
