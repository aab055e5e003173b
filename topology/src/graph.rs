//! The dependency graph: start order in layers, stop order, dependents.

use super::error::GraphError;
use super::model::TopologyConfig;

/// The services of a topology and who needs whom, checked to be acyclic.
///
/// ```
/// use harness::topology::TopologyConfig;
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("services.yaml");
/// # std::fs::write(&path, "services:\n  db: { target: { process: { binary: db } } }\n  \
/// #   api: { target: { process: { binary: api } }, dependencies: [db] }\n  \
/// #   web: { target: { process: { binary: web } }, dependencies: [db] }\n")?;
/// let topology = TopologyConfig::load(&path)?;
/// let graph = topology.graph()?;
/// assert_eq!(graph.start_order(), [vec!["db"], vec!["api", "web"]]);
/// assert_eq!(graph.dependents("db"), ["api", "web"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct DependencyGraph<'a> {
    names: Vec<&'a str>,
    /// Direct dependencies by index, without repeats.
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    layer: Vec<usize>,
}

impl TopologyConfig {
    /// The dependency graph of this topology. Loading already refused unknown dependencies and
    /// cycles, so this fails only for a topology built or changed in code.
    pub fn graph(&self) -> Result<DependencyGraph<'_>, GraphError> {
        DependencyGraph::new(self)
    }
}

impl<'a> DependencyGraph<'a> {
    /// Builds the graph, refusing unknown dependencies and cycles.
    pub fn new(topology: &'a TopologyConfig) -> Result<Self, GraphError> {
        let names: Vec<&str> = topology.services.keys().map(String::as_str).collect();
        let mut deps = vec![Vec::new(); names.len()];
        let mut dependents = vec![Vec::new(); names.len()];
        for (i, service) in topology.services.values().enumerate() {
            for dependency in &service.dependencies {
                let j = topology
                    .services
                    .get_index_of(dependency.as_str())
                    .ok_or_else(|| GraphError::UnknownDependency {
                        service: service.name.clone(),
                        dependency: dependency.clone(),
                    })?;
                if !deps[i].contains(&j) {
                    deps[i].push(j);
                    dependents[j].push(i);
                }
            }
        }
        if let Some(cycle) = cycles(&deps).into_iter().next() {
            return Err(GraphError::Cycle(
                cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|&i| names[i].to_string())
                    .collect(),
            ));
        }
        for list in &mut dependents {
            list.sort_unstable();
        }
        let layer = layers(&deps, &dependents);
        Ok(Self {
            names,
            deps,
            dependents,
            layer,
        })
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    fn names_of(&self, indices: impl IntoIterator<Item = usize>) -> Vec<&'a str> {
        indices.into_iter().map(|i| self.names[i]).collect()
    }

    /// The services in layers: the first layer needs nothing, and each later layer needs only
    /// services in earlier layers, so the services of one layer may start in parallel once the
    /// layers before it are healthy. A service sits in the earliest layer it can; within a
    /// layer, services keep the file's order.
    pub fn start_order(&self) -> Vec<Vec<&'a str>> {
        let depth = self.layer.iter().map(|l| l + 1).max().unwrap_or(0);
        let mut layers = vec![Vec::new(); depth];
        for (i, &l) in self.layer.iter().enumerate() {
            layers[l].push(self.names[i]);
        }
        layers
    }

    /// The layers of [`DependencyGraph::start_order`] backwards: dependents stop before what
    /// they depend on.
    pub fn stop_order(&self) -> Vec<Vec<&'a str>> {
        let mut layers = self.start_order();
        layers.reverse();
        layers
    }

    /// The services `name` needs directly, in the file's order of its `dependencies`; empty for
    /// an unknown name.
    pub fn dependencies(&self, name: &str) -> Vec<&'a str> {
        self.index(name)
            .map(|i| self.names_of(self.deps[i].iter().copied()))
            .unwrap_or_default()
    }

    /// The services that need `name` directly, in file order; empty for an unknown name.
    pub fn dependents(&self, name: &str) -> Vec<&'a str> {
        self.index(name)
            .map(|i| self.names_of(self.dependents[i].iter().copied()))
            .unwrap_or_default()
    }

    /// Everything `name` needs, directly or not, in an order they can start in.
    pub fn dependencies_transitive(&self, name: &str) -> Vec<&'a str> {
        self.closure(name, &self.deps)
    }

    /// Everything that needs `name`, directly or not, in an order they can start in (stop
    /// them in the reverse order before stopping `name`).
    pub fn dependents_transitive(&self, name: &str) -> Vec<&'a str> {
        self.closure(name, &self.dependents)
    }

    fn closure(&self, name: &str, edges: &[Vec<usize>]) -> Vec<&'a str> {
        let Some(start) = self.index(name) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.names.len()];
        let mut stack = edges[start].clone();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(&edges[i]);
            }
        }
        let mut found: Vec<usize> = (0..self.names.len()).filter(|&i| seen[i]).collect();
        found.sort_by_key(|&i| (self.layer[i], i));
        self.names_of(found)
    }
}

/// Each service's layer: 0 without dependencies, else one more than its deepest dependency.
/// Kahn's algorithm, so that a long chain needs no deep recursion; callers have checked that
/// there is no cycle.
fn layers(deps: &[Vec<usize>], dependents: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut layer = vec![0; deps.len()];
    let mut ready: Vec<usize> = (0..deps.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &d in &dependents[i] {
            layer[d] = layer[d].max(layer[i] + 1);
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    layer
}

/// One cycle per group of services that depend on each other in a circle (strongly connected
/// component), as indices in dependency order starting from the group's first service in file
/// order: `[a, b, c]` is a -> b -> c -> a. Groups are in the order of their first service.
pub(crate) fn cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let components = strongly_connected(deps);
    let mut out = Vec::new();
    for component in components {
        let first = *component.iter().min().expect("components are not empty");
        if component.len() == 1 && !deps[first].contains(&first) {
            continue;
        }
        out.push(shortest_cycle(first, &component, deps));
    }
    out.sort_by_key(|cycle| cycle[0]);
    out
}

/// The shortest path from `start` back to itself inside `component` (breadth-first).
fn shortest_cycle(start: usize, component: &[usize], deps: &[Vec<usize>]) -> Vec<usize> {
    let mut previous = vec![usize::MAX; deps.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(i) = queue.pop_front() {
        for &j in &deps[i] {
            if j == start {
                let mut path = vec![i];
                while *path.last().expect("path is not empty") != start {
                    path.push(previous[*path.last().expect("path is not empty")]);
                }
                path.reverse();
                return path;
            }
            if component.contains(&j) && previous[j] == usize::MAX {
                previous[j] = i;
                queue.push_back(j);
            }
        }
    }
    unreachable!("a strongly connected component with an edge has a cycle through each member")
}

/// Tarjan's algorithm, iterative so that a long chain cannot overflow the stack.
fn strongly_connected(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = deps.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, position in its edge list)
        let mut work = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut edge)) = work.last_mut() {
            if let Some(&w) = deps[v].get(*edge) {
                *edge += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                loop {
                    let w = stack.pop().expect("v is on the stack");
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_one_shortest_cycle_per_component() {
        // 0 -> 1 -> 2 -> 0, 1 -> 0 (shorter), 3 -> 3, 4 -> 0 (not in a cycle)
        let deps = vec![vec![1], vec![2, 0], vec![0], vec![3], vec![0]];
        assert_eq!(cycles(&deps), vec![vec![0, 1], vec![3]]);
        assert!(cycles(&[vec![], vec![0], vec![1]]).is_empty());
    }
}
