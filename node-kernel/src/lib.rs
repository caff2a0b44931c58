//! The node's kernel interface, shared by the CNI plugins and the node agent: netlink sockets
//! typed by family and bound to a network namespace ([`socket`]), one typed request per kernel
//! operation ([`link`], [`addr`], [`route`], [`neigh`], [`nft`], [`conntrack`], device
//! features in [`ethtool`], WireGuard devices in [`wireguard`]), link notifications ([`events`]), namespaces and sysctls
//! ([`netns`]).
//!
//! Message types never leave the crate: a caller asks for `create_link`, `route_to` or
//! `nft_transaction`, not for message 16 with flags 0x600. Below the requests, a
//! [`transport::Transport`] carries whole datagrams, to the kernel or (with the `fake`
//! feature, and in this crate's tests) to [`fake::FakeTransport`], which records what was
//! sent and answers from a script.

pub mod addr;
pub mod conntrack;
pub mod error;
pub mod ethtool;
pub mod events;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod kinds;
pub mod link;
pub mod neigh;
pub mod netns;
pub mod nft;
pub mod route;
pub mod socket;
pub mod transport;
pub mod wireguard;

#[cfg(test)]
mod tests;

pub use error::{Context, KernelError};
pub use events::{EntryJoiner, EntryKind, LinkChange, LinkEvents};
pub use netns::{Netns, NetnsError, read_sysctl, write_sysctl};
pub use socket::{
    Ethtool, EthtoolSocket, Netfilter, NetfilterSocket, Route, RouteSocket, Socket, Wireguard,
    WireguardSocket,
};

/// The message crates the typed requests take and return, for callers that build bodies.
pub use netlink_packet_netfilter as netfilter_packet;
pub use netlink_packet_route as route_packet;
