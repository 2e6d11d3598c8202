//! Authorization with Cedar.
