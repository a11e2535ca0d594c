//! The agent's tunnels to a clustered gateway, as one shared picture: the nodes the gateway
//! named (its `Nodes` message, from whichever tunnel heard it last) and which node each tunnel
//! slot is on. Each slot picks its next node from it: one no other slot holds, never the one
//! it was just told to leave; slot 0 falls back to the configured address (a load balancer's
//! name, typically) while no list is known.

use std::sync::Arc;

use g2c_proto::NodeAddr;
use tokio::sync::watch;

/// Where a slot dials next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port`.
    pub addr: String,
    /// The node it is, when chosen from the list.
    pub node: Option<String>,
}

/// What every slot sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Picture {
    /// The active nodes, as the gateway last named them.
    pub nodes: Vec<NodeAddr>,
    /// The node each slot's tunnel is on now.
    pub held: Vec<Option<String>>,
}

/// The shared picture of one agent's tunnels.
pub(crate) struct Fleet {
    picture: watch::Sender<Picture>,
}

impl Fleet {
    /// A fleet of `slots` tunnels.
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            picture: watch::Sender::new(Picture {
                nodes: Vec::new(),
                held: vec![None; slots],
            }),
        })
    }

    /// Follow changes.
    pub fn subscribe(&self) -> watch::Receiver<Picture> {
        self.picture.subscribe()
    }

    /// The gateway named the nodes, and `slot`'s tunnel is on `this`.
    pub fn heard(&self, slot: usize, this: String, nodes: Vec<NodeAddr>) {
        self.picture.send_if_modified(|p| {
            let before = p.clone();
            p.nodes = nodes;
            if let Some(h) = p.held.get_mut(slot) {
                *h = Some(this);
            }
            *p != before
        });
    }

    /// `slot`'s tunnel is down.
    pub fn lost(&self, slot: usize) {
        self.picture
            .send_if_modified(|p| match p.held.get_mut(slot) {
                Some(h @ Some(_)) => {
                    *h = None;
                    true
                }
                _ => false,
            });
    }

    /// Where `slot` dials on its `attempt`-th try, avoiding `avoid`; `None`: wait for the
    /// picture to change (no free node, and this slot has no fallback).
    pub fn choose(
        &self,
        slot: usize,
        attempt: u32,
        avoid: Option<&str>,
        fallback: &str,
    ) -> Option<Target> {
        let p = self.picture.borrow();
        let others: Vec<&str> = p
            .held
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != slot)
            .filter_map(|(_, h)| h.as_deref())
            .collect();
        let free: Vec<&NodeAddr> = p
            .nodes
            .iter()
            .filter(|n| !others.contains(&n.id.as_str()) && Some(n.id.as_str()) != avoid)
            .collect();
        if !free.is_empty() {
            let n = free[(attempt as usize + slot) % free.len()];
            return Some(Target {
                addr: n.ssh.clone(),
                node: Some(n.id.clone()),
            });
        }
        // Slot 0 is the agent's first tunnel: with no list (a single node, or none heard
        // yet), or every listed node failing, it dials the configured address.
        (slot == 0 && (p.nodes.is_empty() || attempt % 2 == 1)).then(|| Target {
            addr: fallback.to_owned(),
            node: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeAddr {
        NodeAddr {
            id: id.into(),
            ssh: format!("{id}:22"),
        }
    }

    #[test]
    fn slots_spread_over_nodes_and_avoid_the_one_they_left() {
        let f = Fleet::new(2);
        let lb = "lb:22";
        assert_eq!(
            f.choose(0, 0, None, lb).unwrap().addr,
            lb,
            "no list: the configured address"
        );
        assert!(
            f.choose(1, 0, None, lb).is_none(),
            "slot 1 waits for a list"
        );
        f.heard(0, "a".into(), vec![node("a"), node("b"), node("c")]);
        for attempt in 0..6 {
            let t = f.choose(1, attempt, None, lb).unwrap();
            assert_ne!(t.node.as_deref(), Some("a"), "never slot 0's node");
        }
        f.heard(1, "b".into(), vec![node("a"), node("b"), node("c")]);
        let t = f.choose(0, 0, Some("a"), lb).unwrap();
        assert_eq!(
            t.node.as_deref(),
            Some("c"),
            "told to leave a, b is taken: c"
        );
        f.lost(1);
        assert!(f.subscribe().borrow().held[1].is_none());
    }

    #[test]
    fn a_single_node_gateway_keeps_one_tunnel() {
        let f = Fleet::new(2);
        f.heard(0, "a".into(), vec![node("a")]);
        assert!(f.choose(1, 0, None, "lb:22").is_none());
        assert!(f.choose(1, 7, None, "lb:22").is_none());
    }
}
