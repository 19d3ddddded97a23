//! What a fresh AWS account must hold before `devstack plan` can work:
//! the two hand-made secrets (the stack checks they exist and uses their
//! ARNs) and the two Amazon Linux 2023 AMI parameters the compute section
//! reads. Tests seed them into their moto with [`seed_platform_prereqs`].

use aws_config::SdkConfig;

/// The production stack's name (`stack/prod.toml`).
pub const PROD_NAME: &str = "prog-strength-developer";

/// Appears in every seeded secret value, so a test can prove no secret
/// value ever reaches plan output, state or logs.
pub const SECRET_VALUE_MARK: &str = "seeded-secret-value-must-never-leak";

/// The AMI parameters, by architecture.
pub const AMI_PARAMETERS: [(&str, &str); 2] = [
    (
        "x86_64",
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    ),
    (
        "arm64",
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
    ),
];

/// Seeds the prerequisites of the prod stack (`prog-strength-developer`).
pub async fn seed_platform_prereqs(cfg: &SdkConfig) {
    seed_platform_prereqs_named(cfg, PROD_NAME).await
}

/// Seeds the prerequisites of a stack with this `name` (dev, stg, ...):
/// each one only if absent, so calling it twice is harmless.
pub async fn seed_platform_prereqs_named(cfg: &SdkConfig, name: &str) {
    for secret in ["claude-credentials", "github-app"] {
        seed_secret(cfg, &format!("{name}/{secret}")).await;
    }
    seed_ami_parameters(cfg).await;
}

/// Creates the secret `name` (with a placeholder value) unless it exists.
pub async fn seed_secret(cfg: &SdkConfig, name: &str) {
    let sm = aws_sdk_secretsmanager::Client::new(cfg);
    if sm.describe_secret().secret_id(name).send().await.is_ok() {
        return;
    }
    sm.create_secret()
        .name(name)
        .secret_string(format!(r#"{{"placeholder":"{SECRET_VALUE_MARK}"}}"#))
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create the secret {name}: {e:?}"));
}

/// moto pre-loads the AL2023 parameters for us-east-2 (and their AMIs);
/// in a region where it does not, they are created with the id of an AMI
/// moto knows for that architecture.
pub async fn seed_ami_parameters(cfg: &SdkConfig) {
    let ssm = aws_sdk_ssm::Client::new(cfg);
    let ec2 = aws_sdk_ec2::Client::new(cfg);
    for (arch, parameter) in AMI_PARAMETERS {
        if ssm.get_parameter().name(parameter).send().await.is_ok() {
            continue;
        }
        let images = ec2
            .describe_images()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("architecture")
                    .values(arch)
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages");
        let ami = images
            .images()
            .iter()
            .find_map(|i| i.image_id())
            .unwrap_or_else(|| panic!("moto knows no {arch} AMI to seed {parameter} with"))
            .to_string();
        ssm.put_parameter()
            .name(parameter)
            .value(ami)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .data_type("aws:ec2:image")
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot create {parameter}: {e:?}"));
    }
}
