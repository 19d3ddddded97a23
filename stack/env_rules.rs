//! The rules every environment value must meet, checked when the file is
//! loaded, before any AWS call: nothing reaches AWS with a value AWS would
//! refuse for a reason devstack can know (a CIDR that does not parse or
//! nest, a retention CloudWatch does not offer, a name over AWS's limit).
//!
//! [`check`] returns the first broken rule as (key, message); the message
//! says what the value is and what is allowed, and [`super::env::Env::validate`]
//! puts the file's name in front, so each rule is one line.

use std::net::Ipv4Addr;

use super::env::Env;

/// The retention periods CloudWatch Logs accepts (PutRetentionPolicy).
pub const LOG_RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// gp3 volume sizes (GiB) EC2 accepts.
pub const VOLUME_SIZE_GIB: (i32, i32) = (1, 16_384);

/// Prefix lengths EC2 accepts for a VPC and a subnet.
pub const CIDR_PREFIX: (u8, u8) = (16, 28);

/// Tags the environment may add per resource: EC2 allows 50, devstack
/// adds `Name`, `ManagedBy` and its ownership tags.
pub const MAX_ENV_TAGS: usize = 40;

/// Characters a security group description may use (EC2).
fn sg_description_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c)
}

type Broken = (&'static str, String);

fn quoted(v: &str) -> String {
    let short: String = v.chars().take(80).collect();
    let cut = if short.len() < v.len() { "…" } else { "" };
    format!("\"{}{cut}\"", short.escape_debug())
}

/// An IPv4 CIDR block: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = p.parse().ok()?;
        (prefix <= 32).then_some(Cidr {
            addr: u32::from(addr),
            prefix,
        })
    }
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    fn network(self) -> Cidr {
        Cidr {
            addr: self.addr & self.mask(),
            prefix: self.prefix,
        }
    }
    fn contains(self, other: Cidr) -> bool {
        other.prefix >= self.prefix && other.addr & self.mask() == self.addr & self.mask()
    }
    fn overlaps(self, other: Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

fn cidr(key: &'static str, value: &str) -> Result<Cidr, Broken> {
    let (lo, hi) = CIDR_PREFIX;
    let Some(c) = Cidr::parse(value) else {
        return Err((
            key,
            format!(
                "is {}: it must be an IPv4 CIDR block such as 10.20.0.0/16 (prefix /{lo} to /{hi})",
                quoted(value)
            ),
        ));
    };
    if !(lo..=hi).contains(&c.prefix) {
        return Err((
            key,
            format!(
                "is {}: AWS accepts prefix lengths /{lo} to /{hi} only",
                quoted(value)
            ),
        ));
    }
    if c.network() != c {
        return Err((
            key,
            format!(
                "is {}: the address has host bits set; the block starts at {}",
                quoted(value),
                c.network()
            ),
        ));
    }
    Ok(c)
}

/// Instance types are `family.size`: `t3.xlarge`, `m7i-flex.large`.
fn instance_type(key: &'static str, value: &str) -> Result<(), Broken> {
    let ok = value.split_once('.').is_some_and(|(family, size)| {
        family.starts_with(|c: char| c.is_ascii_lowercase())
            && family
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && family.chars().any(|c| c.is_ascii_digit())
            && !size.is_empty()
            && size
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err((
            key,
            format!(
                "is {}: an EC2 instance type is family.size in lower case, e.g. t3.xlarge",
                quoted(value)
            ),
        ))
    }
}

/// True for Graviton (arm64) families: `a1`, or a `g` among the letters
/// after the generation digit (`t4g`, `c7gn`, `m6gd`).
pub fn is_arm64_type(value: &str) -> bool {
    let family = value.split('.').next().unwrap_or(value);
    if family == "a1" {
        return true;
    }
    let after_digit = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let letters = after_digit.trim_start_matches(|c: char| c.is_ascii_digit());
    letters.split('-').next().unwrap_or("").contains('g')
}

fn architecture(key: &'static str, value: &str, arch: &str, pinned: bool) -> Result<(), Broken> {
    // A pinned AMI may be either architecture; the latest AL2023 is read
    // for this one, and EC2 refuses an instance type of the other.
    if pinned || is_arm64_type(value) == (arch == "arm64") {
        return Ok(());
    }
    Err((
        key,
        format!(
            "is {}: the stack runs it on the latest {arch} Amazon Linux 2023, so it needs an {arch} instance type (e.g. {})",
            quoted(value),
            if arch == "arm64" { "t4g.small" } else { "t3.xlarge" }
        ),
    ))
}

fn ami(key: &'static str, value: &Option<String>) -> Result<(), Broken> {
    let Some(v) = value else { return Ok(()) };
    let hex = v.strip_prefix("ami-").unwrap_or("");
    if (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    Err((
        key,
        format!("is {}: an AMI id is ami- and 8 or 17 hex digits", quoted(v)),
    ))
}

/// The names the stack derives from `name` (stack/mod.rs), with AWS's
/// length limit for each: the longest one sets the limit on `name`.
pub fn derived_names(name: &str) -> Vec<(&'static str, String, usize)> {
    vec![
        ("IAM role name", format!("{name}-manager-role"), 64),
        ("IAM role name", format!("{name}-worker-role"), 64),
        (
            "instance profile name",
            format!("{name}-manager-profile"),
            128,
        ),
        ("IAM policy name", format!("{name}-manager-inline"), 128),
        ("launch template name", format!("{name}-worker"), 128),
        ("security group name", format!("{name}-manager-sg"), 255),
        ("DynamoDB table name", format!("{name}-runs"), 255),
        ("log group name", format!("/aws/ec2/{name}"), 512),
        ("secret name", format!("{name}/claude-credentials"), 512),
        ("Name tag", format!("{name}-manager-public"), 256),
    ]
}

fn name(value: &str) -> Result<(), Broken> {
    let ok_chars = value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok_chars {
        return Err((
            "name",
            format!(
                "is {}: use letters, digits and `-`, starting with a letter or digit (it names every resource)",
                quoted(value)
            ),
        ));
    }
    for (what, derived, max) in derived_names(value) {
        if derived.len() > max {
            let room = max - (derived.len() - value.len());
            return Err((
                "name",
                format!(
                    "is {} characters: it makes the {what} `{derived}` {} characters, over AWS's {max}; use at most {room}",
                    value.len(),
                    derived.len()
                ),
            ));
        }
    }
    Ok(())
}

fn plain_name(key: &'static str, value: &str, what: &str) -> Result<(), Broken> {
    if !value.is_empty()
        && value.len() <= 100
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Ok(());
    }
    Err((
        key,
        format!(
            "is {}: {what} uses letters, digits, `.`, `_` and `-` (at most 100)",
            quoted(value)
        ),
    ))
}

fn sg_description(key: &'static str, value: &str) -> Result<(), Broken> {
    if value.is_empty() || value.len() > 255 {
        return Err((
            key,
            format!(
                "is {} characters long: EC2 takes 1 to 255",
                value.chars().count()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| !sg_description_char(*c)) {
        return Err((
            key,
            format!(
                "contains {c:?}: EC2 takes letters, digits, spaces and ._-:/()#,@[]+=&;{{}}!$* only"
            ),
        ));
    }
    Ok(())
}

fn hostname(value: &str) -> Result<(), Broken> {
    let ok = value.len() <= 253
        && value.contains('.')
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err((
            "public_hostname",
            format!(
                "is {}: it must be a DNS name such as developers.example.com",
                quoted(value)
            ),
        ))
    }
}

/// Checks every value of `env`; the first broken rule as (key, message).
pub fn check(env: &Env) -> Result<(), Broken> {
    name(&env.name)?;
    let region_ok = {
        let parts: Vec<&str> = env.region.split('-').collect();
        parts.len() >= 3
            && parts[0].len() == 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
            && parts
                .last()
                .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
    };
    if !region_ok {
        return Err((
            "region",
            format!(
                "is {}: it must be an AWS region such as us-east-2",
                quoted(&env.region)
            ),
        ));
    }
    let zone_ok = env
        .availability_zone
        .strip_prefix(env.region.as_str())
        .is_some_and(|z| z.len() == 1 && z.chars().all(|c| c.is_ascii_lowercase()));
    if !zone_ok {
        return Err((
            "availability_zone",
            format!(
                "is {}: it must be a zone of region {}, e.g. {}a",
                quoted(&env.availability_zone),
                env.region,
                env.region
            ),
        ));
    }
    let vpc = cidr("vpc_cidr", &env.vpc_cidr)?;
    let worker = cidr("worker_subnet_cidr", &env.worker_subnet_cidr)?;
    let manager = cidr("manager_subnet_cidr", &env.manager_subnet_cidr)?;
    for (key, subnet) in [
        ("worker_subnet_cidr", worker),
        ("manager_subnet_cidr", manager),
    ] {
        if !vpc.contains(subnet) {
            return Err((
                key,
                format!("is {subnet}: a subnet must lie inside vpc_cidr {vpc}"),
            ));
        }
    }
    if worker.overlaps(manager) {
        return Err((
            "manager_subnet_cidr",
            format!(
                "is {manager}: it overlaps worker_subnet_cidr {worker}; subnets may not overlap"
            ),
        ));
    }
    instance_type("worker_instance_type", &env.worker_instance_type)?;
    instance_type("manager_instance_type", &env.manager_instance_type)?;
    ami("worker_ami", &env.worker_ami)?;
    ami("manager_ami", &env.manager_ami)?;
    architecture(
        "worker_instance_type",
        &env.worker_instance_type,
        "x86_64",
        env.worker_ami.is_some(),
    )?;
    architecture(
        "manager_instance_type",
        &env.manager_instance_type,
        "arm64",
        env.manager_ami.is_some(),
    )?;
    let (lo, hi) = VOLUME_SIZE_GIB;
    if !(lo..=hi).contains(&env.manager_volume_size_gib) {
        return Err((
            "manager_volume_size_gib",
            format!(
                "is {}: a gp3 volume is {lo} to {hi} GiB",
                env.manager_volume_size_gib
            ),
        ));
    }
    if !LOG_RETENTION_DAYS.contains(&env.log_retention_days) {
        let allowed = LOG_RETENTION_DAYS
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err((
            "log_retention_days",
            format!(
                "is {}: CloudWatch Logs keeps events for one of {allowed} days",
                env.log_retention_days
            ),
        ));
    }
    sg_description("worker_sg_description", &env.worker_sg_description)?;
    sg_description("manager_sg_description", &env.manager_sg_description)?;
    plain_name("github_org", &env.github_org, "a GitHub organization")?;
    plain_name("docs_repo", &env.docs_repo, "a repository name")?;
    hostname(&env.public_hostname)?;
    let url = &env.release_url;
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err((
            "release_url",
            format!(
                "is {}: it must be an https:// URL (where devstack releases are published)",
                quoted(url)
            ),
        ));
    }
    if env.fleet_cap == 0 {
        return Err((
            "fleet_cap",
            "is 0: it must be at least 1 (the most workers that may run at once)".into(),
        ));
    }
    if env.models.is_empty() {
        return Err((
            "models",
            "is empty: list the models dispatch may use".into(),
        ));
    }
    if let Some(m) = env
        .models
        .iter()
        .find(|m| m.is_empty() || m.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err((
            "models",
            format!(
                "lists {}: a model name is one word (letters, digits, `-`, `.`)",
                quoted(m)
            ),
        ));
    }
    if !env.models.contains(&env.default_model) {
        return Err((
            "default_model",
            format!(
                "is {}: it must be one of `models` ({})",
                quoted(&env.default_model),
                env.models.join(", ")
            ),
        ));
    }
    if env.tags.len() > MAX_ENV_TAGS {
        return Err((
            "tags",
            format!(
                "has {} entries: at most {MAX_ENV_TAGS} (EC2 allows 50 per resource and devstack adds its own)",
                env.tags.len()
            ),
        ));
    }
    for (k, v) in &env.tags {
        if k.is_empty() || k.len() > 128 || k.to_ascii_lowercase().starts_with("aws:") {
            return Err((
                "tags",
                format!(
                    "has the key {}: a tag key is 1 to 128 characters and may not start with aws:",
                    quoted(k)
                ),
            ));
        }
        if matches!(k.as_str(), "Name" | "ManagedBy") || k.starts_with("devstack:") {
            return Err((
                "tags",
                format!(
                    "has the key {}: devstack sets Name, ManagedBy and devstack:* itself",
                    quoted(k)
                ),
            ));
        }
        if v.len() > 256 {
            return Err((
                "tags",
                format!(
                    "has a value of {} characters under {}: a tag value is at most 256",
                    v.len(),
                    quoted(k)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_nest() {
        let vpc = Cidr::parse("10.20.0.0/16").unwrap();
        assert!(vpc.contains(Cidr::parse("10.20.1.0/24").unwrap()));
        assert!(!vpc.contains(Cidr::parse("10.21.1.0/24").unwrap()));
        assert!(!vpc.contains(Cidr::parse("10.0.0.0/8").unwrap()));
        assert!(Cidr::parse("10.20.1.0/24")
            .unwrap()
            .overlaps(Cidr::parse("10.20.1.128/25").unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0",
            "10.0.0/16",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/16",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn graviton_families_are_arm64() {
        for t in [
            "t4g.small",
            "c7gn.large",
            "m6gd.xlarge",
            "a1.medium",
            "x2gd.large",
        ] {
            assert!(is_arm64_type(t), "{t}");
        }
        for t in [
            "t3.xlarge",
            "m7i-flex.large",
            "g4dn.xlarge",
            "t3a.small",
            "c6i.large",
        ] {
            assert!(!is_arm64_type(t), "{t}");
        }
    }

    #[test]
    fn the_longest_allowed_name_fits_every_aws_limit_in_the_built_stack() {
        let mut env = Env::load("prod").unwrap();
        env.name = "a".repeat(51);
        check(&env).unwrap();
        let stack = crate::stack::stack(&env);
        for r in &stack.resources {
            let Some(name) = r.body.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            let limit = match r.kind.as_str() {
                "aws_iam_role" => 64,
                "aws_iam_instance_profile" | "aws_iam_role_policy" | "aws_launch_template" => 128,
                _ => 255,
            };
            assert!(name.len() <= limit, "{} {name}", r.address);
        }
        env.name = "a".repeat(52);
        let (key, message) = check(&env).unwrap_err();
        assert_eq!(key, "name");
        assert!(message.contains("use at most 51"), "{message}");
    }
}
