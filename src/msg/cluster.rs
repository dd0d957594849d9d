//! What the shards and the cluster bridge (`cluster`) send each other.
//! Only used when the process is a cluster node (`cluster.redis`).
//!
//! Ids: a `ShardId` of `ids::NODE_SHARD_BASE` or more names a shard of
//! another node (`node << 8 | shard`); a low byte of `GATEWAY` there means
//! "the shard of that node that owns the message's room by hash".

use crate::ids::{RoomKey, ShardId};
use crate::msg::RemoteMsg;

/// The low byte of a node-shard id that lets the receiving node pick the
/// shard (its own hash of the room key).
pub const GATEWAY: u8 = 255;

/// From a shard to the bridge.
#[derive(Debug)]
pub enum ClusterOut {
    /// `msgs`, in order, for shard `to` of another node (one publish on
    /// that node's channel).
    ToShard { from: ShardId, to: ShardId, msgs: Vec<RemoteMsg> },
    /// A broadcast (`RemoteMsg::Fanout`) of a room this node owns, for its
    /// members on other nodes: one publish on the room's channel, to which
    /// every node with members is subscribed.
    ToRoom { from: ShardId, msg: RemoteMsg },
    /// A `RemoteMsg::Join` for room `key`, which no shard of this node
    /// holds: the bridge claims the room for this node (the join comes back
    /// in `ClusterIn::Claimed`) or passes it to the node that owns it.
    Join { from: ShardId, key: RoomKey, msg: RemoteMsg },
    /// A message for whichever node owns room `key` (`direct` to a user's
    /// personal room); when no node does, it comes back in `ClusterIn::Unrouted`.
    Route { from: ShardId, key: RoomKey, msg: RemoteMsg },
    /// This node's room `key` closed: its claim is given up.
    Release { key: RoomKey },
    /// Rooms this node holds, claimed again (Redis lost its data).
    Reclaim(Vec<RoomKey>),
    /// A text every other node's acceptor gets (an admin request that acts
    /// wherever its target lives: `ClusterIn` never carries it).
    Announce(Vec<u8>),
}

/// From the bridge to a shard.
#[derive(Debug)]
pub enum ClusterIn {
    /// This node now owns the rooms of these joins (`ClusterOut::Join`):
    /// the shard creates them and takes the joins in.
    Claimed(Vec<RemoteMsg>),
    /// No node owns the room of a `ClusterOut::Route` message.
    Unrouted(RemoteMsg),
    /// Node `node` stopped (its liveness key expired): its members leave
    /// the rooms here, and connections here in rooms it owned are closed.
    NodeDown(u8),
    /// The link to Redis went down (`false`) or came back (`true`).
    Link(bool),
    /// Redis came back empty: claim every room held here again (`ClusterOut::Reclaim`).
    Reclaim,
}
