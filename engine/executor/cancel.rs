//! Cancellation tokens for running actions, on a `tokio::sync::watch` channel (no tokio-util).
//!
//! [`Cancel::new`] returns a [`CancelHandle`] (the owner loop keeps it; Ctrl-C calls
//! [`CancelHandle::cancel`]) and a [`Cancel`] token. Tokens are cheap clones and
//! [`CancelHandle::token`] makes more, so one handle can stop every running action.
//!
//! Invariants: cancellation is sticky (once true, always true) and observed even by a token that
//! starts waiting after it happened. Dropping the handle without cancelling means "never".

use tokio::sync::watch;

/// The owner's side: cancels every token made from it.
#[derive(Debug)]
pub struct CancelHandle(watch::Sender<bool>);

/// The action's side: [`Cancel::cancelled`] resolves once cancellation is requested.
#[derive(Debug, Clone)]
pub struct Cancel(watch::Receiver<bool>);

impl Cancel {
    /// A new handle and its first token.
    pub fn new() -> (CancelHandle, Cancel) {
        let (tx, rx) = watch::channel(false);
        (CancelHandle(tx), Cancel(rx))
    }

    /// A token that never fires.
    pub fn never() -> Cancel {
        Cancel::new().1
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when cancellation is requested (at once if it already was); never resolves if the
    /// handle is dropped without cancelling.
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|cancelled| *cancelled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl CancelHandle {
    /// Requests cancellation of every token of this handle.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Another token for this handle.
    pub fn token(&self) -> Cancel {
        Cancel(self.0.subscribe())
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
}
