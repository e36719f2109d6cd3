//! What a request path names, read before routing: the route template (the metric label) and the
//! database and action of a credentials path. Matches exactly the paths the router matches.

use super::audit::Action;

pub(crate) use crate::metrics::CREDENTIALS_ROUTE;
/// The route template of refreshes.
pub(crate) const REFRESH_ROUTE: &str = "/credentials/{db}/refresh";

/// The database (still percent-encoded) and action a credentials path names; `None` for every
/// other path. As in the router, a read needs a name (`/credentials/` is no route) and a
/// refresh does not (`/credentials//refresh` is one, with an empty name).
pub(crate) fn target(path: &str) -> Option<(&str, Action)> {
    let rest = path.strip_prefix("/credentials/")?;
    match rest.split_once('/') {
        None if rest.is_empty() => None,
        None => Some((rest, Action::Read)),
        Some((db, "refresh")) => Some((db, Action::Refresh)),
        Some(_) => None,
    }
}

/// The route template of `path`: the metric label of its request.
pub(crate) fn template(path: &str) -> Option<&'static str> {
    target(path).map(|(_, action)| match action {
        Action::Read => CREDENTIALS_ROUTE,
        Action::Refresh => REFRESH_ROUTE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_paths_name_their_database_and_action() {
        assert!(matches!(
            target("/credentials/orders"),
            Some(("orders", Action::Read))
        ));
        assert!(matches!(
            target("/credentials/orders/refresh"),
            Some(("orders", Action::Refresh))
        ));
        assert!(matches!(
            target("/credentials//refresh"),
            Some(("", Action::Refresh))
        ));
        assert!(matches!(
            target("/credentials/a%2Fb"),
            Some(("a%2Fb", Action::Read))
        ));
        for other in [
            "/credentials/orders/other",
            "/credentials/orders/",
            "/credentials/orders/refresh/",
            "/credentials/",
            "/credentials",
            "//credentials/orders",
            "/metrics",
        ] {
            assert!(target(other).is_none(), "{other}");
        }
    }
}
