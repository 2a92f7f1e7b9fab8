//! Giving up privileges once the capture is open. A sensor needs
//! CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode) only to open its
//! capture; everything after (decoding hostile traffic, talking to the
//! aggregator) runs with none: the optional switch to an unprivileged user,
//! then every capability set cleared (bounding and ambient included) and
//! `no_new_privs` set so nothing executed later can regain any.
//!
//! Linux keeps capabilities per thread: [`drop_all`] must run before the
//! sensor starts any other thread, so that every thread inherits the empty
//! sets.

use caps::CapSet;
use nix::unistd::{Gid, Uid};
use std::path::Path;

/// Why privileges could not be given up.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user to switch to does not exist.
    #[error("no user '{0}' on this system")]
    NoUser(String),
    /// A system call failed.
    #[error("dropping privileges ({step}): {msg}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The error.
        msg: String,
    },
}

fn sys(step: &'static str) -> impl Fn(String) -> PrivilegeError {
    move |msg| PrivilegeError::Sys { step, msg }
}

/// What the process runs with after [`drop_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The user it switched to, if any.
    pub user: Option<String>,
    /// Capabilities it held before (names, sorted), for the log.
    pub had: Vec<String>,
}

/// Switches to `user` (when given: its group, no supplementary groups;
/// the directories in `hand_over` and what they hold, such as the spool,
/// become the user's first), then clears every capability set of the
/// calling thread and sets `no_new_privs`. Call it before any other thread
/// starts.
pub fn drop_all(user: Option<&str>, hand_over: &[&Path]) -> Result<Dropped, PrivilegeError> {
    let mut had: Vec<String> = caps::read(None, CapSet::Effective)
        .map_err(|e| sys("reading capabilities")(e.to_string()))?
        .iter()
        .map(|c| c.to_string())
        .collect();
    had.sort();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // switching user or clearing the effective set takes away. Without CAP_SETPCAP (an
    // unprivileged run) there is nothing to bound.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in caps::all() {
            if caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, c)
                    .map_err(|e| sys("bounding set")(e.to_string()))?;
            }
        }
    }
    if let Some(name) = user {
        let u = nix::unistd::User::from_name(name)
            .map_err(|e| sys("looking up the user")(e.to_string()))?
            .ok_or_else(|| PrivilegeError::NoUser(name.to_string()))?;
        for dir in hand_over {
            chown_tree(dir, u.uid, u.gid)
                .map_err(|e| sys("handing over the spool")(e.to_string()))?;
        }
        nix::unistd::setgroups(&[u.gid]).map_err(|e| sys("setgroups")(e.to_string()))?;
        nix::unistd::setgid(u.gid).map_err(|e| sys("setgid")(e.to_string()))?;
        nix::unistd::setuid(u.uid).map_err(|e| sys("setuid")(e.to_string()))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| sys("clearing capabilities")(e.to_string()))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| sys("no_new_privs")(e.to_string()))?;
    Ok(Dropped {
        user: user.map(str::to_string),
        had,
    })
}

/// `dir`, its subdirectories and their files, owned by `uid`:`gid`.
fn chown_tree(dir: &Path, uid: Uid, gid: Gid) -> std::io::Result<()> {
    let own = |p: &Path| std::os::unix::fs::chown(p, Some(uid.as_raw()), Some(gid.as_raw()));
    own(dir)?;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            chown_tree(&p, uid, gid)?;
        } else {
            own(&p)?;
        }
    }
    Ok(())
}
