//! The HTTP partition: one partition task fed by `POST /ingest` (and the demo fleet), which
//! decode on their own tasks and send batches here in order of arrival.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::output::Fanout;
use crate::pipeline::{self, Batch, PartitionSpec, Steps};
use crate::record::SourceKind;

/// Batches waiting for the HTTP partition at most (ingest requests wait beyond it).
const QUEUE: usize = 64;

/// Starts the HTTP partition; returns its input and its task, which flushes every window and
/// ends when `stop` is cancelled and every sender is dropped.
pub fn start(
    steps: Steps,
    fanout: Fanout,
    stop: CancellationToken,
) -> (mpsc::Sender<Batch>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Batch>(QUEUE);
    let spec = PartitionSpec {
        steps,
        source: SourceKind::Http,
        name: "0".into(),
        durable: None,
    };
    (tx, tokio::spawn(pipeline::run(spec, rx, fanout, stop)))
}
