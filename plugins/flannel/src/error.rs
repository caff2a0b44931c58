//! flannel's failures and their CNI codes.

use cni_common::CniError;
use cni_common::error::code;

#[derive(Debug, thiserror::Error)]
pub enum FlannelError {
    /// The config or subnet.env cannot be used (7).
    #[error("{0}")]
    Config(String),
    /// flanneld has not written subnet.env yet: try again later (11); STATUS reports 50.
    #[error("{0}")]
    NotReady(String),
    /// From the library or a delegate: the code is kept.
    #[error(transparent)]
    Cni(#[from] CniError),
    /// The saved delegate config could not be written or removed (104).
    #[error("{0}")]
    State(String),
}

impl From<FlannelError> for CniError {
    fn from(e: FlannelError) -> Self {
        match e {
            FlannelError::Cni(inner) => inner,
            FlannelError::Config(m) => CniError::invalid_config(m, ""),
            FlannelError::NotReady(m) => CniError::TryAgainLater {
                msg: m,
                details: String::new(),
            },
            FlannelError::State(m) => CniError::plugin(code::STATE, m, ""),
        }
    }
}
