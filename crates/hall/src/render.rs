//! The privilege path's files under their first names, for callers written
//! before [`crate::sudoers`], [`crate::shim`] and [`crate::units`] existed.

use std::path::Path;

use nuketown_town::Town;

/// Same as [`crate::sudoers::render`].
pub fn sudoers(town: &Town) -> String {
    crate::sudoers::render(town)
}

/// Same as [`crate::shim::render`].
pub fn shim(elevate: &Path) -> String {
    crate::shim::render(elevate)
}

pub use crate::units::{approvers_socket, desktop_approver_service, hall_service, hall_socket};
