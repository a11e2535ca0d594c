//! Tunnels held by other nodes of a cluster, as the wings see them: whether another node holds
//! a registration's tunnel, and a stream to it through that node. The cluster wing implements
//! this over its peer link; the front door and the public TCP ports use it when this node has
//! no tunnel of its own, so neither knows how nodes talk.

use futures::future::BoxFuture;
use g2c_proto::handshake::OpenError;
use g2c_proto::mux::MuxStream;
use g2c_proto::peer::Dial;

/// Other nodes' tunnels.
pub trait Remote: Send + Sync {
    /// Whether, as this node last heard, another active node holds `registration`'s tunnel.
    fn holds(&self, registration: &str) -> bool;

    /// Registrations whose tunnel another active node holds (for the TCP ports that listen on
    /// every node).
    fn held(&self) -> Vec<String>;

    /// A stream to the dial's service through a node that holds the tunnel: each holder is
    /// tried in turn until one takes it or answers finally (an agent's refusal). Raw bytes
    /// follow on the stream.
    fn open(&self, dial: Dial) -> BoxFuture<'_, Result<MuxStream, OpenError>>;
}

/// The cluster as agents are told of it (the `Nodes` control message): this node's id and the
/// active nodes agents may dial. `None` on a single node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesView {
    /// This node's id.
    pub this: String,
    /// Active nodes with their SSH addresses.
    pub nodes: Vec<g2c_proto::NodeAddr>,
}
