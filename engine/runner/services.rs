//! Services in the owner loop: a `service` node runs nothing itself. When the first action
//! that depends on it is about to run, its worker asks [`ServicePool::ensure`], which starts
//! the service once (`delivery::service`) and waits until its `ready` probe passes; the other
//! dependents wait for the same start. Each dependent that settles (ran, failed, reused or
//! skipped) is counted off ([`ServicePool::settled`]); after the last one the service is
//! stopped, and whatever still runs when the build ends (a failure, a timeout, Ctrl-C) is
//! stopped then ([`ServicePool::stop_all`]). A service's process group is recorded in the lock
//! file while it runs, so that a `flow` killed with -9 leaves nothing the next command does not
//! kill; dropping a running service kills its group too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flow_rules::Delivery;

use crate::delivery::probe::Probe;
use crate::delivery::service::{RunningService, ServiceSpec};
use crate::executor::GroupLog;
use crate::plan::{ActionKind, Plan};

enum State {
    NotStarted,
    Running(Box<RunningService>),
    /// It could not start: every dependent fails with this.
    Failed(String),
    Stopped,
}

/// The services of one build.
pub struct ServicePool {
    plan: Arc<Plan>,
    workspace_root: PathBuf,
    log_dir: PathBuf,
    groups: Option<Arc<GroupLog>>,
    states: tokio::sync::Mutex<HashMap<usize, State>>,
    /// Per service node, its dependents not settled yet.
    waiting: std::sync::Mutex<HashMap<usize, usize>>,
    /// Stops begun in the background ([`ServicePool::settle`]): the build waits for them.
    stopping: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl ServicePool {
    /// `log_dir`: where each service's output goes (`<name>.log`).
    pub fn new(
        plan: Arc<Plan>,
        workspace_root: PathBuf,
        log_dir: PathBuf,
        groups: Option<Arc<GroupLog>>,
    ) -> ServicePool {
        let waiting = (0..plan.nodes.len())
            .filter(|&i| plan.nodes[i].kind == ActionKind::Service)
            .map(|i| (i, plan.dependents(i).len()))
            .collect();
        ServicePool {
            plan,
            workspace_root,
            log_dir,
            groups,
            states: tokio::sync::Mutex::new(HashMap::new()),
            waiting: std::sync::Mutex::new(waiting),
            stopping: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// [`ServicePool::settled`] in the background (the owner loop does not wait); the end of
    /// the build waits for it ([`ServicePool::stop_all`]), so a `stop` command is never cut
    /// short by the process exiting.
    pub fn settle(self: &Arc<Self>, i: usize) {
        if self.plan.nodes[i].services.is_empty() {
            return;
        }
        let pool = self.clone();
        let task = tokio::spawn(async move { pool.settled(i).await });
        self.stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Starts service node `s` unless it runs already; `Err`: why it is not ready.
    pub async fn ensure(&self, s: usize) -> Result<(), String> {
        let mut states = self.states.lock().await;
        match states.get(&s).unwrap_or(&State::NotStarted) {
            State::Running(_) => return Ok(()),
            State::Failed(why) => return Err(why.clone()),
            State::Stopped | State::NotStarted => {}
        }
        let started = match self.spec(s) {
            Ok(spec) => RunningService::start_recorded(spec, self.groups.as_deref()).await,
            Err(why) => Err(why),
        };
        match started {
            Ok(service) => {
                states.insert(s, State::Running(Box::new(service)));
                Ok(())
            }
            Err(why) => {
                states.insert(s, State::Failed(why.clone()));
                Err(why)
            }
        }
    }

    /// Node `i` settled: the services it needs lose a waiting dependent; one that has none
    /// left is stopped.
    pub async fn settled(&self, i: usize) {
        let done: Vec<usize> = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            self.plan.nodes[i]
                .services
                .iter()
                .filter(|u| {
                    let left = waiting.entry(u.node).or_insert(0);
                    *left = left.saturating_sub(1);
                    *left == 0
                })
                .map(|u| u.node)
                .collect()
        };
        for s in done {
            self.stop(s).await;
        }
    }

    /// Stops every service still running (the end of a build, whatever its outcome), after
    /// the stops begun in the background finished.
    pub async fn stop_all(&self) {
        let begun = std::mem::take(&mut *self.stopping.lock().unwrap_or_else(|e| e.into_inner()));
        for task in begun {
            let _ = task.await;
        }
        let running: Vec<usize> = self.states.lock().await.keys().copied().collect();
        for s in running {
            self.stop(s).await;
        }
    }

    async fn stop(&self, s: usize) {
        let state = self.states.lock().await.insert(s, State::Stopped);
        if let Some(State::Running(service)) = state {
            // A failed `stop` command still ends with the group killed (`RunningService::stop`).
            let _ = service.stop().await;
        }
    }

    fn spec(&self, s: usize) -> Result<ServiceSpec, String> {
        let action = &self.plan.nodes[s];
        let Some(Delivery::Service {
            ready,
            stop,
            timeout,
        }) = &action.delivery
        else {
            return Err(format!("`{}` is not a service", action.label));
        };
        let mut env = action.env.clone();
        env.insert(
            "FLOW_WORKSPACE".into(),
            self.workspace_root.display().to_string(),
        );
        let name: String = action
            .label
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(ServiceSpec {
            label: action.label.to_string(),
            start: action.cmd.clone(),
            ready: Probe::parse(ready).map_err(|why| format!("service {}: {why}", action.label))?,
            stop: stop.clone(),
            timeout: *timeout.max(&Duration::from_millis(1)),
            cwd: self.workspace_root.join(&action.package),
            env,
            log: self.log_dir.join(format!("{name}.log")),
        })
    }
}
