//! Values worth computing once per run however many clusters and phases ask for them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::OnceCell;

/// Values worth computing once per run however many clusters ask (a download, a peer's remote
/// secret), by key. A failure is shared too, so the other clusters report it instead of trying
/// again; [`Memo::forget`] drops a value that went stale.
#[derive(Default)]
pub struct Memo {
    cells: std::sync::Mutex<HashMap<String, Arc<MemoCell>>>,
}

/// One value of a [`Memo`]: the text, or why it could not be had.
type MemoCell = OnceCell<Result<String, String>>;

impl Memo {
    /// The value under `key`, computed by `compute` by the first caller only.
    pub async fn get_or_compute<F>(&self, key: &str, compute: F) -> Result<String, String>
    where
        F: Future<Output = Result<String, String>>,
    {
        let cell = self
            .cells
            .lock()
            .expect("memo lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        cell.get_or_init(|| compute).await.clone()
    }

    /// Drops the value under `key`: the next caller computes it again.
    pub fn forget(&self, key: &str) {
        self.cells.lock().expect("memo lock").remove(key);
    }
}
