//! The signals that stop a flow command: SIGINT (Ctrl-C), SIGTERM (`kill`, `timeout`, a CI
//! job's cancel, `docker stop`) and SIGHUP (the terminal closed). Each is handled as Ctrl-C is:
//! running actions' process groups are killed, nothing half-done is recorded, the workspace lock
//! and the sandboxes are released, and the command exits with 130. Registered once per command,
//! as early as possible, so that none is lost.

use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Interrupts {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Interrupts {
    /// Registers the handlers (inside a tokio runtime); `None` if the system refuses.
    pub fn register() -> Option<Interrupts> {
        Some(Interrupts {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }

    /// Resolves when one of the signals arrives.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}
