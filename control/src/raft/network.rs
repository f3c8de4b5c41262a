//! Raft RPCs out: one [`Peer`] per target, each a JSON POST to the target's
//! manager address (`/raft/append`, `/raft/vote`, `/raft/snapshot`) through
//! the shared [`Client`], which sends the dataservice secret.
//!
//! A peer that cannot be reached is reported to openraft as `Unreachable`
//! (it backs off), a timeout as `Timeout`-like network error, and an error
//! the remote raft returned as `RemoteError`, as openraft expects.

use super::TypeConfig;
use crate::http::{Client, HttpError};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

type NodeId = u64;

/// Makes a [`Peer`] for each target openraft talks to.
#[derive(Clone)]
pub struct Network {
    client: Client,
    addrs: Arc<BTreeMap<NodeId, String>>,
}

impl Network {
    /// RPCs through `client`. `addrs` are the manager addresses of this
    /// process's config: they win over the address stored in the raft
    /// membership (written by whichever manager initialized the cluster), so
    /// each host reaches its peers the way its own config says.
    pub fn new(client: Client, addrs: BTreeMap<NodeId, String>) -> Self {
        Network {
            client,
            addrs: Arc::new(addrs),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            addr: self
                .addrs
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
        }
    }
}

/// The RPC client for one target.
pub struct Peer {
    client: Client,
    target: NodeId,
    addr: String,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let r: Result<Result<Resp, RaftError<NodeId, E>>, HttpError> = self
            .client
            .post(&self.addr, path, req, option.hard_ttl())
            .await;
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(e @ HttpError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}
