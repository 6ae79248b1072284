//! The task that closes windows: at every interval boundary (on the UTC
//! clock) it harvests the recorder into one batch and hands it to the sender.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use querypulse_proto::Window;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::now_ms;
use crate::recorder::Recorder;
use crate::sender::ToSender;

/// Requests from [`crate::Agent`] handles.
#[derive(Debug)]
pub(crate) enum Command {
    /// Close the current (partial) window now and answer once everything is
    /// acknowledged, with the number of batches still unacknowledged.
    Flush {
        timeout: Duration,
        reply: oneshot::Sender<usize>,
    },
    /// Like `Flush`, then stop.
    Shutdown {
        timeout: Duration,
        reply: oneshot::Sender<usize>,
    },
}

pub(crate) async fn run(
    recorder: Arc<Recorder>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    to_sender: mpsc::UnboundedSender<ToSender>,
    drop_timeout: Duration,
) {
    let mut seq = 0u64;
    let mut close = |window: Window| {
        seq += 1;
        let batch = recorder.harvest(seq, window);
        // The sender only goes away after a stop request, which ends this loop.
        let _ = to_sender.send(ToSender::Batch(Box::new(batch)));
    };
    loop {
        let interval_ms = recorder.settings.interval_ms.load(Ordering::Relaxed).max(1) as i64;
        let now = now_ms();
        let boundary = (now.div_euclid(interval_ms) + 1) * interval_ms;
        let tick = tokio::time::sleep(Duration::from_millis((boundary - now) as u64));
        tokio::select! {
            _ = tick => close(Window::containing(boundary - 1, interval_ms as u32)),
            command = commands.recv() => {
                let window = Window::containing(now_ms(), interval_ms as u32);
                let (timeout, reply, stop) = match command {
                    Some(Command::Flush { timeout, reply }) => (timeout, Some(reply), false),
                    Some(Command::Shutdown { timeout, reply }) => (timeout, Some(reply), true),
                    // Every handle is gone: ship what is left and stop.
                    None => (drop_timeout, None, true),
                };
                close(window);
                let (sync_reply, sync_wait) = oneshot::channel();
                let _ = to_sender.send(ToSender::Sync { deadline: Instant::now() + timeout, stop, reply: sync_reply });
                if let Some(reply) = reply {
                    let pending = sync_wait.await.unwrap_or(usize::MAX);
                    let _ = reply.send(pending);
                }
                if stop {
                    break;
                }
            }
        }
    }
}
