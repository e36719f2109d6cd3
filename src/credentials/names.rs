//! Database names: what a configured database may be called, checked once at the boundary.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest database name accepted, in bytes.
pub const MAX_DB_NAME_LEN: usize = 64;

/// A configured database's name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, not `.`/`..`.
/// Shared, not copied: the broker's map, the cache, the metrics and every fetched version hold
/// the same allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(Arc<str>);

impl DbName {
    /// Checks `name` against the allowed shape and returns it as a `DbName`.
    pub fn parse(name: &str) -> Result<Self, &'static str> {
        Self::check(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// Checks `name` against the allowed shape without allocating.
    pub fn check(name: &str) -> Result<(), &'static str> {
        if name.is_empty() || name.len() > MAX_DB_NAME_LEN {
            return Err("database names are 1 to 64 characters long");
        }
        if name == "." || name == ".." {
            return Err("database names cannot be `.` or `..`");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err("database names may contain only ASCII letters, digits, '-', '_' and '.'");
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for DbName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
