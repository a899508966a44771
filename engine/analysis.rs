//! Analysis: from a starting directory to a validated `TargetGraph` (find the workspace, read
//! `flow.toml`, evaluate every BUILD file, build and check the graph). Any error stops here,
//! with all errors of all files reported together.

use std::path::Path;

use flow_rules::{evaluate_workspace, EvalOptions};

use crate::error::Error;
use crate::graph::TargetGraph;
use crate::workspace::Workspace;

/// Discovers the workspace above `start` and analyses it.
pub fn load_graph(start: &Path) -> Result<(Workspace, TargetGraph), Error> {
    let ws = Workspace::discover(start)?;
    let opts = EvalOptions {
        root: ws.root.clone(),
        vars: ws.config.vars.clone(),
        skip_dirs: Vec::new(),
    };
    let evaluation = evaluate_workspace(&opts).map_err(|e| Error::Io {
        path: ws.root.clone(),
        action: "walk the workspace",
        error: e.to_string(),
    })?;
    let (graph, errors) = TargetGraph::build(evaluation, &ws.config.default_visibility);
    if !errors.is_empty() {
        return Err(Error::Analysis(errors));
    }
    Ok((ws, graph))
}
