//! Which registries are Amazon ECR, and which account and region each belongs to.
//!
//! Recognises every private ECR hostname form the newest amazon-ecr-credential-helper accepts
//! (`<account>.dkr.ecr[-fips].<region>.<suffix>` and the dual-stack `dkr-ecr` form, in every
//! partition) and ECR Public. Any other host (pull-through cache, VPC endpoint, alias) is ECR
//! when the driver config declares it in a `[[registry]]` entry.

use std::fmt;

use super::host::hostname;

/// An AWS partition, derived from the hostname suffix (and region for GovCloud).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Partition {
    Aws,
    AwsCn,
    AwsUsGov,
    AwsEusc,
    AwsIso,
    AwsIsoB,
    AwsIsoE,
    AwsIsoF,
}

impl Partition {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
            Partition::AwsEusc => "aws-eusc",
            Partition::AwsIso => "aws-iso",
            Partition::AwsIsoB => "aws-iso-b",
            Partition::AwsIsoE => "aws-iso-e",
            Partition::AwsIsoF => "aws-iso-f",
        }
    }

    /// The partition a region belongs to when nothing else says (for `[[registry]]` aliases).
    pub(crate) fn of_region(region: &str) -> Partition {
        if region.starts_with("cn-") {
            Partition::AwsCn
        } else if region.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else if region.starts_with("eusc-") {
            Partition::AwsEusc
        } else if region.starts_with("us-isob-") {
            Partition::AwsIsoB
        } else if region.starts_with("us-iso-") {
            Partition::AwsIso
        } else if region.starts_with("eu-isoe-") {
            Partition::AwsIsoE
        } else if region.starts_with("us-isof-") {
            Partition::AwsIsoF
        } else {
            Partition::Aws
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hostname suffixes of private ECR, with their partition.
const SUFFIXES: &[(&str, Partition)] = &[
    ("amazonaws.com", Partition::Aws),
    ("amazonaws.com.cn", Partition::AwsCn),
    ("amazonaws.eu", Partition::AwsEusc),
    ("on.aws", Partition::Aws),
    ("on.amazonwebservices.com.cn", Partition::AwsCn),
    ("c2s.ic.gov", Partition::AwsIso),
    ("sc2s.sgov.gov", Partition::AwsIsoB),
    ("cloud.adc-e.uk", Partition::AwsIsoE),
    ("csp.hci.ic.gov", Partition::AwsIsoF),
];

/// ECR Public's hostnames; its API lives only in us-east-1.
pub(crate) const PUBLIC_HOSTS: &[&str] = &["public.ecr.aws", "ecr-public.aws.com"];
pub(crate) const PUBLIC_REGION: &str = "us-east-1";

/// An ECR registry recognised from its hostname.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum EcrHost {
    Private {
        registry_id: String,
        region: String,
        partition: Partition,
        fips: bool,
    },
    Public,
}

/// Recognises an ECR hostname. Accepts what Docker calls a registry (`host[:port]`) and also
/// a URL (`https://host/v2/`), as the credential helper does: only the hostname counts.
pub(crate) fn parse_ecr_host(input: &str) -> Option<EcrHost> {
    let host = hostname(input).to_ascii_lowercase();
    if PUBLIC_HOSTS.contains(&host.as_str()) {
        return Some(EcrHost::Public);
    }
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `dkr.ecr`, `dkr.ecr-fips`, `dkr-ecr`, `dkr-ecr-fips`
    let rest = rest.strip_prefix("dkr")?;
    let rest = rest.strip_prefix('.').or_else(|| rest.strip_prefix('-'))?;
    let rest = rest.strip_prefix("ecr")?;
    let (fips, rest) = match rest.strip_prefix("-fips") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (region, suffix) = rest.strip_prefix('.')?.split_once('.')?;
    let region_ok = region.starts_with(|c: char| c.is_ascii_alphanumeric())
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !region_ok {
        return None;
    }
    let (_, partition) = SUFFIXES.iter().find(|(s, _)| *s == suffix)?;
    let partition = match partition {
        Partition::Aws if region.starts_with("us-gov-") => Partition::AwsUsGov,
        p => *p,
    };
    Some(EcrHost::Private {
        registry_id: account.to_owned(),
        region: region.to_owned(),
        partition,
        fips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(id: &str, region: &str, partition: Partition, fips: bool) -> Option<EcrHost> {
        Some(EcrHost::Private {
            registry_id: id.into(),
            region: region.into(),
            partition,
            fips,
        })
    }

    #[test]
    fn recognises_every_private_form() {
        let id = "123456789012";
        let cases = [
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                private(id, "eu-west-1", Partition::Aws, false),
            ),
            (
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                private(id, "us-east-1", Partition::Aws, true),
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                private(id, "cn-north-1", Partition::AwsCn, false),
            ),
            (
                "123456789012.dkr-ecr.us-east-1.on.aws",
                private(id, "us-east-1", Partition::Aws, false),
            ),
            (
                "123456789012.dkr-ecr-fips.us-east-1.on.aws",
                private(id, "us-east-1", Partition::Aws, true),
            ),
            (
                "123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
                private(id, "cn-north-1", Partition::AwsCn, false),
            ),
            (
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
                private(id, "eusc-de-east-1", Partition::AwsEusc, false),
            ),
            (
                "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
                private(id, "us-gov-west-1", Partition::AwsUsGov, false),
            ),
            (
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
                private(id, "us-iso-east-1", Partition::AwsIso, false),
            ),
            (
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
                private(id, "us-isob-east-1", Partition::AwsIsoB, false),
            ),
            (
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
                private(id, "eu-isoe-west-1", Partition::AwsIsoE, false),
            ),
            (
                "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
                private(id, "us-isof-south-1", Partition::AwsIsoF, false),
            ),
            (
                "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/",
                private(id, "eu-west-1", Partition::Aws, false),
            ),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com:443",
                private(id, "eu-west-1", Partition::Aws, false),
            ),
            (
                "123456789012.DKR.ECR.EU-WEST-1.AMAZONAWS.COM",
                private(id, "eu-west-1", Partition::Aws, false),
            ),
            ("public.ecr.aws", Some(EcrHost::Public)),
            ("ecr-public.aws.com", Some(EcrHost::Public)),
        ];
        for (host, expected) in cases {
            assert_eq!(parse_ecr_host(host), expected, "{host}");
        }
    }

    #[test]
    fn rejects_lookalikes() {
        for host in [
            "docker.io",
            "myalias.dkr.ecr.us-east-1.amazonaws.com",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.co",
            "123456789012.dkr.ecrx.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.dkr_ecr.us-east-1.amazonaws.com",
            "evil.com/123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "public.ecr.aws.evil.com",
            "",
        ] {
            assert_eq!(parse_ecr_host(host), None, "{host}");
        }
    }

    #[test]
    fn partition_of_region() {
        assert_eq!(Partition::of_region("eu-west-1"), Partition::Aws);
        assert_eq!(Partition::of_region("cn-northwest-1"), Partition::AwsCn);
        assert_eq!(Partition::of_region("us-isob-east-1"), Partition::AwsIsoB);
        assert_eq!(Partition::of_region("us-iso-east-1"), Partition::AwsIso);
    }
}
