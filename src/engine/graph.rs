//! Dependency graphs: topological order and cycle reporting. Edges map a
//! node to the nodes it depends on (which must come first).

use std::collections::{BTreeMap, BTreeSet};

use super::resource::StackError;

/// Nodes in dependency order (dependencies first; ties by name, so the
/// order is deterministic). Dependencies that are not nodes are ignored.
pub fn topo_order(edges: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<String>, StackError> {
    let mut indegree: BTreeMap<&str, usize> = edges.keys().map(|k| (k.as_str(), 0)).collect();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, deps) in edges {
        for d in deps {
            if edges.contains_key(d) && d != node {
                *indegree.entry(node.as_str()).or_default() += 1;
                dependents
                    .entry(d.as_str())
                    .or_default()
                    .push(node.as_str());
            }
        }
    }
    let mut ready: BTreeSet<&str> = indegree
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut order = Vec::with_capacity(edges.len());
    while let Some(node) = ready.pop_first() {
        order.push(node.to_string());
        for dep in dependents.get(node).into_iter().flatten() {
            if let Some(n) = indegree.get_mut(dep) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(dep);
                }
            }
        }
    }
    if order.len() != edges.len() {
        let stuck: Vec<&str> = indegree
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, _)| *k)
            .collect();
        return Err(StackError::Cycle(stuck.join(" -> ")));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn dependencies_come_first() {
        let order = topo_order(&g(&[("c", &["b"]), ("b", &["a"]), ("a", &[])])).unwrap();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn cycles_are_named() {
        let err = topo_order(&g(&[("a", &["b"]), ("b", &["a"]), ("c", &[])])).unwrap_err();
        assert_eq!(err, StackError::Cycle("a -> b".into()));
    }
}
