//! Message types (linux/rtnetlink.h, nfnetlink.h): the crate's own, never a caller's.

use nix::libc;

pub const NEW_LINK: u16 = libc::RTM_NEWLINK;
pub const DEL_LINK: u16 = libc::RTM_DELLINK;
pub const GET_LINK: u16 = libc::RTM_GETLINK;
pub const SET_LINK: u16 = libc::RTM_SETLINK;
pub const NEW_ADDR: u16 = libc::RTM_NEWADDR;
pub const DEL_ADDR: u16 = libc::RTM_DELADDR;
pub const GET_ADDR: u16 = libc::RTM_GETADDR;
pub const NEW_ROUTE: u16 = libc::RTM_NEWROUTE;
pub const DEL_ROUTE: u16 = libc::RTM_DELROUTE;
pub const GET_ROUTE: u16 = libc::RTM_GETROUTE;
pub const NEW_NEIGH: u16 = libc::RTM_NEWNEIGH;
pub const DEL_NEIGH: u16 = libc::RTM_DELNEIGH;
pub const GET_NEIGH: u16 = libc::RTM_GETNEIGH;

/// An nfnetlink message type: subsystem in the high byte.
pub const fn nfnl(subsystem: u16, msg: u16) -> u16 {
    (subsystem << 8) | msg
}

pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
