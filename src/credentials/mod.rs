//! The ground floor, which uses nothing else of the crate: database names, endpoints, the
//! credentials model (the password a secret type), parsing of secret JSON, and the output
//! formats, each body rendered once per fetched version and shared by every request; and secrets
//! as their store keeps them, for the AWS agent's API.

mod endpoint;
mod format;
mod iam;
mod model;
mod names;
mod render;
mod secret;
mod stored;

pub use endpoint::Endpoint;
pub use format::{Format, RenderError};
pub use iam::{Auth, AuthToken, signing_time};
pub use model::{Credentials, Pending, SECRET_STATUSES};
pub use names::{DbName, MAX_DB_NAME_LEN};
pub use render::Rendered;
pub use secret::{MalformedSecret, SecretPayload, SecretVersion};
pub use stored::{
    AWSCURRENT, MAX_SECRET_ID_LEN, MAX_STAGE_LEN, ServiceRefusal, StoredSecret, StoredVersion,
    VersionSelector, is_error_code,
};

#[cfg(test)]
mod tests;
