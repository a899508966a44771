//! Before a build that deploys starts anything: each deploy it includes must be allowed now
//! (its environment's deployment window, or `--emergency` with a reason and, where the
//! environment asks, an approver) and from this branch (`branches`). A refusal stops the
//! build before the first action, with every reason at once; nothing runs, nothing is
//! recorded. Then the effects' shared state is opened ([`open_effects`]).

use std::sync::{Arc, Mutex};

use flow_rules::Delivery;

use super::effects::{Effects, Happened};
use super::git::{self, GitFacts};
use super::ledger::Ledger;
use super::window::{may_deploy, Emergency};
use crate::error::Error;
use crate::plan::{ActionKind, Plan};
use crate::session::Session;

/// Refuses the build (an error naming each deploy and why) when a deploy of `plan` may not
/// start now; see the module doc.
pub fn check(
    session: &Session,
    plan: &Plan,
    git: Option<&GitFacts>,
    emergency: Option<&Emergency>,
) -> Result<(), Error> {
    let now = session.clock.now_ms();
    let mut refusals = Vec::new();
    for action in plan.nodes.iter().filter(|a| a.kind == ActionKind::Deploy) {
        let Some(Delivery::Deploy {
            environment,
            branches,
            ..
        }) = &action.delivery
        else {
            continue;
        };
        if let Some(env) = session.ws.config.environments.get(environment) {
            if let Err(why) = may_deploy(env, now, emergency) {
                refusals.push(format!("`{}`: {why}", action.label));
            }
        }
        if branches.is_empty() {
            continue;
        }
        let branch = git.and_then(|g| g.branch.as_deref());
        if !branch.is_some_and(|b| branches.iter().any(|x| x == b)) {
            let from = match (git, branch) {
                (None, _) => "outside a git checkout".to_owned(),
                (Some(_), None) => "from a detached HEAD (no branch)".to_owned(),
                (Some(_), Some(b)) => format!("from branch `{b}`"),
            };
            let allowed: Vec<String> = branches.iter().map(|b| format!("`{b}`")).collect();
            refusals.push(format!(
                "`{}` deploys to {environment} only from {}; this build runs {from}",
                action.label,
                allowed.join(", ")
            ));
        }
    }
    if refusals.is_empty() {
        return Ok(());
    }
    Err(Error::Usage {
        message: format!(
            "deploy refused, nothing was run:\n  {}",
            refusals.join("\n  ")
        ),
        help: None,
    })
}

/// The values of the secrets any action of `plan` declares (those set in flow's environment).
pub fn secret_values(plan: &Plan) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> =
        plan.nodes.iter().flat_map(|a| a.secrets.iter()).collect();
    names
        .into_iter()
        .filter_map(|n| std::env::var(n).ok())
        .collect()
}

/// What the effects of a build share, when `plan` has any: the ledger (opened now, with its
/// shared home fetched; `warn` gets what it said), the git facts, the user.
pub fn open_effects(
    session: &mut Session,
    plan: &Plan,
    emergency: Option<Emergency>,
    warn: &mut dyn FnMut(String),
) -> Result<Option<Arc<Effects>>, Error> {
    if !plan.nodes.iter().any(|a| a.kind.is_effect()) {
        return Ok(None);
    }
    let root = session.ws.root.clone();
    let git = git::facts(&root);
    check(session, plan, git.as_ref(), emergency.as_ref())?;
    let needs_ledger = plan
        .nodes
        .iter()
        .any(|a| matches!(a.kind, ActionKind::Deploy | ActionKind::Monitor));
    let ledger = match needs_ledger {
        true => Ledger::open(&root, &session.ws.config.ledger, warn).map_err(|e| e.to_string()),
        false => Err("this build deploys nothing".into()),
    };
    Ok(Some(Arc::new(Effects {
        workspace_root: root,
        cache: session.cache()?,
        ledger: Mutex::new(ledger),
        git,
        user: git::current_user(),
        clock: session.clock,
        emergency,
        secret_values: secret_values(plan),
        happened: Mutex::new(Happened::default()),
        warnings: Mutex::new(Vec::new()),
    })))
}
