//! A Merkle tree over a replica's leaf digests, and the descent that finds
//! the leaves two replicas disagree on while asking only for the subtrees
//! that differ.
//!
//! Both sides build their tree over the same log-index range, so they have
//! the same number of leaves and hence the same shape: level 0 holds the
//! leaves, each level above hashes up to [`FANOUT`] children, and the top
//! level has one node, the root. A node at `(level, pos)` has the children
//! `pos * FANOUT ..` at `level - 1`.
//!
//! Worked example: 40 leaves give levels of 40, 3 and 1 nodes. Roots
//! differ → ask for level 1 positions 0..3 → only position 2 differs → ask
//! for level 0 positions 32..40 → leaves 35 and 36 differ. Three round trips
//! and 12 hashes instead of 40.

use std::future::Future;
use std::ops::Range;

use cairn_storage::Digest;

/// Children per inner node.
pub const FANOUT: u64 = 16;

/// The root of a tree with no leaves (an empty range).
const EMPTY_ROOT: Digest = [0; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves; the last level has at most one node.
    levels: Vec<Vec<Digest>>,
}

fn hash_node(children: &[Digest]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"cairn-node");
    for c in children {
        h.update(c);
    }
    *h.finalize().as_bytes()
}

impl MerkleTree {
    pub fn build(leaves: Vec<Digest>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().expect("non-empty").len() > 1 {
            let up = levels
                .last()
                .expect("non-empty")
                .chunks(FANOUT as usize)
                .map(hash_node)
                .collect();
            levels.push(up);
        }
        MerkleTree { levels }
    }

    /// The level of the root of a tree with `leaves` leaves.
    pub fn top_for(leaves: u64) -> u32 {
        let (mut n, mut level) = (leaves, 0);
        while n > 1 {
            n = n.div_ceil(FANOUT);
            level += 1;
        }
        level
    }

    /// The level of the root.
    pub fn top(&self) -> u32 {
        (self.levels.len() - 1) as u32
    }

    pub fn root(&self) -> Digest {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(EMPTY_ROOT)
    }

    pub fn leaf_count(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The node at `(level, pos)`, if the tree has it.
    pub fn node(&self, level: u32, pos: u64) -> Option<Digest> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(usize::try_from(pos).ok()?))
            .copied()
    }

    /// The positions of the node's children one level down.
    pub fn children(&self, level: u32, pos: u64) -> Range<u64> {
        debug_assert!(level > 0);
        let below = self.levels[level as usize - 1].len() as u64;
        (pos * FANOUT).min(below)..((pos + 1) * FANOUT).min(below)
    }

    /// The hashes at `positions` of `level`, or `None` if one is outside
    /// the tree (a request built for a tree of another shape).
    pub fn nodes(&self, level: u32, positions: &[u64]) -> Option<Vec<Digest>> {
        positions.iter().map(|&p| self.node(level, p)).collect()
    }
}

/// What a descent found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descent {
    /// Leaf positions that differ, ascending, with the other side's digest.
    pub leaves: Vec<(u64, Digest)>,
    /// Tree nodes compared on the way (the root included).
    pub nodes_compared: u64,
}

/// Compares `local` with a remote tree of the same shape, asking the remote
/// side (through `fetch(level, positions)`, which must answer one digest
/// per position) only for children of nodes that differ.
pub async fn descend<F, Fut, E>(local: &MerkleTree, mut fetch: F) -> Result<Descent, E>
where
    F: FnMut(u32, Vec<u64>) -> Fut,
    Fut: Future<Output = Result<Vec<Digest>, E>>,
{
    let mut descent = Descent::default();
    if local.leaf_count() == 0 {
        return Ok(descent);
    }
    let mut level = local.top();
    let mut positions = vec![0];
    loop {
        let theirs = fetch(level, positions.clone()).await?;
        descent.nodes_compared += positions.len() as u64;
        let differing: Vec<(u64, Digest)> = positions
            .iter()
            .zip(theirs)
            .filter(|(p, h)| local.node(level, **p) != Some(*h))
            .map(|(p, h)| (*p, h))
            .collect();
        if level == 0 || differing.is_empty() {
            if level == 0 {
                descent.leaves = differing;
            }
            return Ok(descent);
        }
        positions = differing
            .iter()
            .flat_map(|(p, _)| local.children(level, *p))
            .collect();
        level -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn leaves(n: usize, seed: u8) -> Vec<Digest> {
        (0..n)
            .map(|i| *blake3::hash(&[seed, i as u8, (i >> 8) as u8]).as_bytes())
            .collect()
    }

    async fn diff(a: &MerkleTree, b: &MerkleTree, asked: &Cell<u64>) -> Descent {
        descend(a, |level, positions| {
            asked.set(asked.get() + positions.len() as u64);
            let answer = b.nodes(level, &positions).expect("same shape");
            async move { Ok::<_, ()>(answer) }
        })
        .await
        .expect("no transport errors here")
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn identical_trees_compare_only_their_roots() {
        let a = MerkleTree::build(leaves(1000, 1));
        let b = MerkleTree::build(leaves(1000, 1));
        let asked = Cell::new(0);
        let d = run(diff(&a, &b, &asked));
        assert!(d.leaves.is_empty());
        assert_eq!(d.nodes_compared, 1);
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn a_descent_finds_exactly_the_differing_leaves_asking_for_few_nodes() {
        let base = leaves(1000, 1);
        let mut other = base.clone();
        for i in [3usize, 517, 518, 999] {
            other[i] = [0xAB; 32];
        }
        let (a, b) = (MerkleTree::build(base), MerkleTree::build(other));
        let asked = Cell::new(0);
        let d = run(diff(&a, &b, &asked));
        let found: Vec<u64> = d.leaves.iter().map(|(p, _)| *p).collect();
        assert_eq!(found, vec![3, 517, 518, 999]);
        assert!(d.leaves.iter().all(|(_, h)| *h == [0xAB; 32]));
        // 1000 leaves → levels of 1000, 63, 4, 1: at most 1 + 4 + 3*16 + 3*16.
        assert!(asked.get() < 120, "asked for {} nodes", asked.get());
    }

    #[test]
    fn small_and_empty_trees_work() {
        let empty = MerkleTree::build(Vec::new());
        assert_eq!(empty.root(), EMPTY_ROOT);
        let asked = Cell::new(0);
        assert_eq!(run(diff(&empty, &empty, &asked)).nodes_compared, 0);

        let one_a = MerkleTree::build(leaves(1, 1));
        let one_b = MerkleTree::build(leaves(1, 2));
        assert_eq!(one_a.top(), 0);
        let d = run(diff(&one_a, &one_b, &asked));
        assert_eq!(d.leaves.len(), 1);
        assert_eq!(d.leaves[0].0, 0);
    }

    #[test]
    fn the_root_level_follows_from_the_leaf_count() {
        for n in [0u64, 1, 2, 16, 17, 256, 257, 1000, 4096, 4097] {
            let tree = MerkleTree::build(leaves(n as usize, 3));
            assert_eq!(MerkleTree::top_for(n), tree.top(), "{n} leaves");
        }
    }

    #[test]
    fn any_change_of_a_leaf_changes_the_root() {
        let base = leaves(300, 7);
        let root = MerkleTree::build(base.clone()).root();
        for i in [0, 150, 299] {
            let mut changed = base.clone();
            changed[i][0] ^= 1;
            assert_ne!(MerkleTree::build(changed).root(), root);
        }
        // Dropping the last leaf changes the shape and the root.
        assert_ne!(MerkleTree::build(base[..299].to_vec()).root(), root);
    }
}
