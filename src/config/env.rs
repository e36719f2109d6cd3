//! Which environment variables are configuration: `CREDENTIAL_BROKER_<SECTION>__<KEY>`, never a
//! Kubernetes service link. Kubernetes gives every pod `<SERVICE>_SERVICE_HOST`,
//! `<SERVICE>_SERVICE_PORT[_<NAME>]`, `<SERVICE>_PORT` and `<SERVICE>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`
//! for each Service of its namespace, so a Service called `credential-broker` yields
//! `CREDENTIAL_BROKER_PORT=tcp://…`.

/// Prefix of the environment variables that override file values; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "CREDENTIAL_BROKER_";

/// The variable the configuration file is named by; it is no key.
const CONFIG_VARIABLE: &str = "CREDENTIAL_BROKER_CONFIG";

/// Whether `name`, the part of a variable's name after [`ENV_PREFIX`], is a configuration key.
///
/// Every key is in a section, so its name has a `__`; a service link's has none, unless the
/// Service's name has `--`, and then it still ends with a service link's suffix right after a
/// letter or digit, which no key does (`…__PORT` has `_` before `_PORT`).
pub(super) fn is_config_key(name: &str) -> bool {
    name.contains("__") && !is_service_link(name)
}

/// The `CREDENTIAL_BROKER_` variables of `vars` that are not configuration keys (names only).
pub(super) fn ignored(vars: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = vars
        .filter(|name| name != CONFIG_VARIABLE)
        .filter(|name| {
            name.strip_prefix(ENV_PREFIX)
                .is_some_and(|rest| !is_config_key(rest))
        })
        .collect();
    names.sort();
    names
}

/// Whether `name` ends the way a Kubernetes service link does, after a letter or digit.
fn is_service_link(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let after_a_name = |at: usize| at > 0 && name.as_bytes()[at - 1].is_ascii_alphanumeric();
    let service = name.match_indices("_SERVICE_").any(|(at, _)| {
        let rest = &name[at + "_SERVICE_".len()..];
        after_a_name(at)
            && (rest == "HOST"
                || rest == "PORT"
                || rest
                    .strip_prefix("PORT_")
                    .is_some_and(|port| !port.is_empty()))
    });
    let port = name.match_indices("_PORT").any(|(at, _)| {
        let rest = &name[at + "_PORT".len()..];
        if !after_a_name(at) {
            return false;
        }
        let Some(rest) = rest.strip_prefix('_') else {
            return rest.is_empty();
        };
        let parts: Vec<&str> = rest.split('_').collect();
        let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        let protocol = |p: &str| matches!(p, "TCP" | "UDP" | "SCTP");
        match parts.as_slice() {
            [n, proto] => number(n) && protocol(proto),
            [n, proto, field] => {
                number(n) && protocol(proto) && matches!(*field, "PROTO" | "PORT" | "ADDR")
            }
            _ => false,
        }
    });
    service || port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_section_and_key_and_never_a_service_link() {
        for key in [
            "SERVER__LISTEN",
            "CACHE__TTL",
            "DATABASES__ORDERS__PORT",
            "DATABASES__ORDERS__HOST",
            "DATABASES__X_SERVICE__PORT",
            "AWS__ENDPOINT_URL",
            "server__admin_listen",
        ] {
            assert!(is_config_key(key), "{key}");
        }
        // The links of Services named credential-broker, credential-broker-server--listen and
        // credential-broker-databases--orders.
        for link in [
            "PORT",
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_HTTP",
            "PORT_2775_TCP",
            "PORT_2775_TCP_PROTO",
            "PORT_2775_TCP_PORT",
            "PORT_2775_TCP_ADDR",
            "SERVER__LISTEN_PORT",
            "SERVER__LISTEN_SERVICE_HOST",
            "SERVER__LISTEN_PORT_80_UDP_ADDR",
            "DATABASES__ORDERS_SERVICE_PORT_METRICS",
            "TOKEN",
        ] {
            assert!(!is_config_key(link), "{link}");
        }
    }

    #[test]
    fn ignored_names_exclude_keys_other_prefixes_and_the_config_variable() {
        let vars = [
            "CREDENTIAL_BROKER_PORT",
            "CREDENTIAL_BROKER_CACHE__TTL",
            "CREDENTIAL_BROKER_CONFIG",
            "OTHER_PORT",
            "CREDENTIAL_BROKER_SERVICE_HOST",
        ]
        .map(String::from);
        assert_eq!(
            ignored(vars.into_iter()),
            ["CREDENTIAL_BROKER_PORT", "CREDENTIAL_BROKER_SERVICE_HOST"]
        );
    }
}
