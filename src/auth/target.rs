//! Which ECR registry a pull needs a token for, with the identity settings that apply to it,
//! and whose identity fetches that token.

use secrecy::SecretString;

use crate::config::ecr::IdentityMode;
use crate::policy::AllowList;
use crate::reference::ecr::Partition;

/// An ECR registry with the identity settings that apply to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EcrTarget {
    /// `host[:port]` as the image names it.
    pub host: String,
    /// `None` for ECR Public.
    pub registry_id: Option<String>,
    pub region: String,
    pub partition: Partition,
    /// A FIPS hostname (`dkr.ecr-fips`, `dkr-ecr-fips`): the token comes from FIPS endpoints.
    pub fips: bool,
    pub mode: IdentityMode,
    pub role_arn: Option<String>,
    pub profile: Option<String>,
    pub id_token_variable: String,
    pub allowed_job_roles: AllowList,
}

/// Whose credentials fetch a token.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    Runner {
        role_arn: Option<String>,
        profile: Option<String>,
    },
    Job {
        role_arn: String,
        token: SecretString,
    },
}

impl Identity {
    pub(crate) fn describe(&self) -> String {
        match self {
            Identity::Runner {
                role_arn: None,
                profile,
            } => match profile {
                Some(p) => format!("runner (AWS profile {p})"),
                None => "runner (AWS default credential chain)".into(),
            },
            Identity::Runner {
                role_arn: Some(role),
                ..
            } => format!("runner, assuming role {role}"),
            Identity::Job { role_arn, .. } => format!("job id_token, assuming role {role_arn}"),
        }
    }
}
