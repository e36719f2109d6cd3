//! Process set-up at start: no core dumps and no ptrace attach by other processes of the same
//! user, so credentials in memory cannot be read from a crash dump or `/proc/<pid>/mem`; and an
//! open-file limit that fits the configured connections.

use rustix::process::{
    DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit,
};

/// Descriptors the broker needs besides its API connections: listeners, the admin listener's
/// 64 connections, connections to AWS, files.
pub const OTHER_FILES: u64 = 256;

/// Marks the process non-dumpable and sets its core size limit to 0.
pub fn harden() -> std::io::Result<()> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one (a common soft default, 1024, is below
/// `server.max_connections`' 2048); returns the soft limit now in force (`None`: unlimited).
pub fn raise_open_files() -> std::io::Result<Option<u64>> {
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one (the kernel caps it at fs.nr_open).
    if let Some(maximum) = limit.maximum
        && limit.current.is_some_and(|current| current < maximum)
    {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            },
        )?;
        return Ok(Some(maximum));
    }
    Ok(limit.current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::dumpable_behavior;

    #[test]
    fn the_process_becomes_non_dumpable_with_no_core_size() {
        harden().unwrap();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
        assert_eq!(getrlimit(Resource::Core).current, Some(0));
    }

    #[test]
    fn the_soft_open_file_limit_rises_to_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let now = raise_open_files().unwrap();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(now, after.current);
        assert_eq!(after.maximum, before.maximum);
        if before.maximum.is_some() {
            assert_eq!(after.current, before.maximum);
        }
    }
}
