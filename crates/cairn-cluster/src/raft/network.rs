//! Raft RPCs over the node transport.
//!
//! Every group's RPCs share the one connection per node pair: the frame
//! header names the group and the kind ([`kinds`]), the payload is the
//! postcard-encoded openraft request. Entries hold their batches as
//! [`bytes::Bytes`], so a batch is copied into the frame once and not
//! re-encoded.
//!
//! Transport failures map onto openraft's retry semantics: a peer we
//! cannot reach (or whose connection dropped) is `Unreachable` (openraft
//! backs off), a deadline is `Timeout`, and a Raft error raised by the
//! remote handler comes back as `RemoteError`.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError as RaftRemoteError,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::types::NodeInfo;
use crate::transport::{NodeId, RemoteError, Transport, TransportError};

/// Frame kinds of Raft RPCs (the group id is in the frame header).
pub mod kinds {
    pub const APPEND_ENTRIES: u16 = 10;
    pub const VOTE: u16 = 11;
    pub const INSTALL_SNAPSHOT: u16 = 12;
}

/// Remote error code for a payload the handler could not decode.
pub const BAD_RPC: u16 = 400;
/// Remote error code for a group this node does not run (yet, or any more).
pub const NO_SUCH_GROUP: u16 = 404;

/// Makes a [`GroupNetwork`] per target for one Raft group.
#[derive(Debug, Clone)]
pub struct GroupNetworkFactory<C> {
    transport: Transport,
    group: u64,
    _config: PhantomData<fn() -> C>,
}

impl<C> GroupNetworkFactory<C> {
    pub fn new(transport: Transport, group: u64) -> Self {
        Self {
            transport,
            group,
            _config: PhantomData,
        }
    }
}

impl<C> RaftNetworkFactory<C> for GroupNetworkFactory<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    type Network = GroupNetwork<C>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        // Membership is where addresses come from: keep the transport's peer
        // table in step with it (an unparsable address leaves the table as
        // is; calls then fail as unreachable and openraft retries).
        if let Ok(addr) = node.raft_addr.parse::<SocketAddr>()
            && self.transport.peers().get(&target).copied().flatten() != Some(addr)
        {
            self.transport.set_peer(target, addr);
        }
        GroupNetwork {
            transport: self.transport.clone(),
            group: self.group,
            target,
            _config: PhantomData,
        }
    }
}

/// Sends one group's RPCs to one target node.
#[derive(Debug)]
pub struct GroupNetwork<C> {
    transport: Transport,
    group: u64,
    target: NodeId,
    _config: PhantomData<fn() -> C>,
}

impl<C> GroupNetwork<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    async fn rpc<Req, Resp, E>(
        &self,
        kind: u16,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = postcard::to_allocvec(req)
            .map(Bytes::from)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .transport
            .call(self.target, self.group, kind, payload, ttl)
            .await
            .map_err(|e| match e {
                TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                    action,
                    id: self.transport.node_id(),
                    target: self.target,
                    timeout: ttl,
                }),
                other => RPCError::Unreachable(Unreachable::new(&other)),
            })?;
        let answer: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RaftRemoteError::new(self.target, e)))
    }
}

impl<C> RaftNetwork<C> for GroupNetwork<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc(
            kinds::APPEND_ENTRIES,
            RPCTypes::AppendEntries,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(
            kinds::INSTALL_SNAPSHOT,
            RPCTypes::InstallSnapshot,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc(kinds::VOTE, RPCTypes::Vote, &rpc, option.hard_ttl())
            .await
    }
}

/// Answers one Raft RPC frame addressed to `raft`'s group: decodes the
/// request, hands it to openraft and encodes its `Result` for the caller.
pub async fn serve_rpc<C>(raft: &Raft<C>, kind: u16, payload: &[u8]) -> Result<Bytes, RemoteError>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RemoteError> {
        postcard::from_bytes(payload)
            .map_err(|e| RemoteError::new(BAD_RPC, format!("undecodable raft rpc: {e}")))
    }
    fn encode<T: Serialize>(value: &T) -> Result<Bytes, RemoteError> {
        postcard::to_allocvec(value)
            .map(Bytes::from)
            .map_err(|e| RemoteError::new(BAD_RPC, format!("unencodable raft reply: {e}")))
    }
    match kind {
        kinds::APPEND_ENTRIES => encode(&raft.append_entries(decode(payload)?).await),
        kinds::VOTE => encode(&raft.vote(decode(payload)?).await),
        kinds::INSTALL_SNAPSHOT => encode(&raft.install_snapshot(decode(payload)?).await),
        other => Err(RemoteError::new(
            BAD_RPC,
            format!("unknown raft rpc kind {other}"),
        )),
    }
}
