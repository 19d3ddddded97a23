//! The one error layer between the AWS SDK and the user.
//!
//! Every SDK error devstack meets (provider, state store, fleet registry,
//! dispatch, worker) is turned here into ONE readable line: the AWS code and
//! message (`InvalidVpcID.NotFound: The vpc ID 'vpc-1' does not exist`), or
//! what went wrong on the way (`no AWS credentials found`, `cannot reach
//! http://127.0.0.1:1 (Connection refused)`). The SDK's own `Display` says
//! only "service error", and its `DisplayErrorContext` ends with the whole
//! Debug form of the response; neither ever reaches a user.
//!
//! Some failures have something the user can do about them (configure
//! credentials, fix the endpoint, grant a permission, retry later). Those
//! lines get a `hint:`. Errors travel through the engine as strings (the
//! engine knows nothing of AWS), so the hint travels beside the line: it is
//! registered here under the exact line, and the printer asks
//! [`hints_for`] for the hints of every line it prints. A hint is therefore
//! only ever shown next to the error that produced it.

use std::sync::{Mutex, OnceLock};

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::engine::provider::ProviderError;

/// Where the SDK sends requests: the region and, when set
/// (`AWS_ENDPOINT_URL`), the endpoint override. Recorded once by
/// [`crate::aws::clients`] so an unreachable-endpoint error can name the
/// URL it tried.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

static TARGET: OnceLock<Target> = OnceLock::new();
static HINTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records the region and endpoint in use (first call wins).
pub fn set_target(target: Target) {
    let _ = TARGET.set(target);
}

/// Registers `hint` for an error whose text contains `line`.
pub fn register_hint(line: impl Into<String>, hint: impl Into<String>) {
    let (line, hint) = (line.into(), hint.into());
    if let Ok(mut hints) = HINTS.lock() {
        if !hints.iter().any(|(l, h)| *l == line && *h == hint) {
            hints.push((line, hint));
        }
    }
}

/// The hints registered for any line contained in `text`, once each.
pub fn hints_for(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Ok(hints) = HINTS.lock() {
        for (line, hint) in hints.iter() {
            if text.contains(line.as_str()) && !out.contains(hint) {
                out.push(hint.clone());
            }
        }
    }
    out
}

/// The service error code, when AWS answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|se| se.code())
}

/// Error codes AWS uses for throttling (all services devstack calls).
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestThrottled"
            | "SlowDown"
            | "PriorRequestNotComplete"
    )
}

/// Error codes AWS uses for a permission refusal.
pub fn is_access_denied(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "Forbidden"
    ) || code.starts_with("AccessDenied")
}

/// Error codes for credentials AWS does not accept.
fn is_bad_credentials(code: &str) -> bool {
    matches!(
        code,
        "AuthFailure"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
    )
}

/// `ec2`, `CreateVpc` from the SDK's operation error type
/// (`aws_sdk_ec2::operation::create_vpc::CreateVpcError`).
fn service_and_action<E>() -> (String, String) {
    let name = std::any::type_name::<E>();
    let service = name
        .split("::")
        .next()
        .and_then(|c| c.strip_prefix("aws_sdk_"))
        .map(|s| match s {
            "cloudwatchlogs" => "logs".to_string(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "aws".to_string());
    let action = name
        .rsplit("::")
        .next()
        .and_then(|t| t.strip_suffix("Error"))
        .unwrap_or("")
        .to_string();
    (service, action)
}

/// The URL a request to `service` went to.
fn url_for(service: &str) -> String {
    let target = TARGET.get().cloned().unwrap_or_default();
    if let Some(endpoint) = target.endpoint {
        return endpoint;
    }
    let region = target.region.unwrap_or_else(|| "us-east-1".into());
    match service {
        "iam" => "https://iam.amazonaws.com".to_string(),
        "aws" => format!("the AWS endpoints of {region}"),
        s => format!("https://{s}.{region}.amazonaws.com"),
    }
}

/// The Display texts of an error's sources, each once, joined by `: `
/// (never a Debug form).
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let text = text.trim();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The innermost source's text (an I/O error's "Connection refused").
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The credentials failure in an error's sources, if that is what it is.
fn credentials_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CredentialsError> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        next = e.source();
    }
    None
}

const CREDENTIALS_HINT: &str = "devstack uses the standard AWS credential chain: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in ~/.aws/config (`aws sso login --profile NAME` for SSO), or AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE (GitHub OIDC); on EC2 the instance profile is used";

/// The line for a credentials failure. The instance metadata service is
/// the chain's last resort: when it fails too (off EC2 it always does), the
/// story is "no credentials anywhere", so IMDS is never blamed; a provider
/// that is configured and fails (a broken profile, an expired SSO token)
/// keeps its own words.
fn credentials_line(c: &CredentialsError) -> String {
    let detail = chain_text(c);
    match c {
        CredentialsError::CredentialsNotLoaded(_) => "no AWS credentials found".to_string(),
        _ if detail.contains("IMDS") || detail.to_ascii_lowercase().contains("metadata") => {
            "no AWS credentials found".to_string()
        }
        _ => format!("cannot load AWS credentials: {detail}"),
    }
}

/// One line for an SDK error, registering a hint when there is something
/// to do about it.
pub fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (service, action) = service_and_action::<E>();
    if let Some(se) = e.as_service_error() {
        let code = se.code().unwrap_or("Error");
        let line = match se.message() {
            Some(m) if !m.is_empty() => format!("{code}: {m}"),
            _ => code.to_string(),
        };
        if is_throttling(code) {
            register_hint(
                line.clone(),
                format!(
                    "AWS kept throttling {service}:{action} through {} attempts; retry later, or lower --concurrency",
                    crate::aws::clients::MAX_ATTEMPTS
                ),
            );
        } else if is_access_denied(code) {
            register_hint(
                line.clone(),
                format!(
                    "the AWS identity devstack runs as may not call {service}:{action}; grant it in that role's policy (`aws sts get-caller-identity` shows which role is in use), or run with the role meant for this command"
                ),
            );
        } else if is_bad_credentials(code) {
            register_hint(
                line.clone(),
                format!("AWS refused the credentials; check they are current (`aws sts get-caller-identity`). {CREDENTIALS_HINT}"),
            );
        }
        return line;
    }
    match e {
        SdkError::DispatchFailure(d) => {
            if let Some(c) = e.source_ref().and_then(credentials_error) {
                let line = credentials_line(c);
                register_hint(line.clone(), CREDENTIALS_HINT);
                return line;
            }
            let url = url_for(&service);
            if d.is_timeout() {
                let line = format!("no answer from {url} in time");
                register_hint(line.clone(), unreachable_hint(&url));
                return line;
            }
            if d.is_io() {
                let why = e.source_ref().map(innermost).unwrap_or_default();
                let line = if why.is_empty() {
                    format!("cannot reach {url}")
                } else {
                    format!("cannot reach {url} ({why})")
                };
                register_hint(line.clone(), unreachable_hint(&url));
                return line;
            }
            // Anything else on the way (a connection closed before the
            // answer came): name the URL and the innermost reason.
            let why = e.source_ref().map(innermost).unwrap_or_default();
            let line = format!("no answer from {url} ({why})");
            register_hint(line.clone(), unreachable_hint(&url));
            line
        }
        SdkError::TimeoutError(_) => {
            let url = url_for(&service);
            let line = format!("no answer from {url} in time");
            register_hint(line.clone(), unreachable_hint(&url));
            line
        }
        _ => e
            .source_ref()
            .map(chain_text)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| e.to_string()),
    }
}

fn unreachable_hint(url: &str) -> String {
    if TARGET.get().and_then(|t| t.endpoint.as_ref()).is_some() {
        format!("devstack tried {url} (from AWS_ENDPOINT_URL); check that URL, or unset AWS_ENDPOINT_URL to talk to AWS itself")
    } else {
        format!("devstack tried {url}; check the network (and HTTPS_PROXY if one is needed) and the region")
    }
}

/// Small extension: the SDK error's source as a `dyn Error`.
trait SourceRef {
    fn source_ref(&self) -> Option<&(dyn std::error::Error + 'static)>;
}

impl<E, R> SourceRef for SdkError<E, R>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn source_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self)
    }
}

/// True when a call failed in a way the SDK's standard retry mode retries
/// (no answer, a 5xx, throttling): the request may or may not have been
/// executed.
pub fn is_transient<E>(e: &SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // A dispatch failure may have reached AWS (a connection closed
        // before the answer), except a bad request or missing credentials.
        SdkError::DispatchFailure(d) => {
            !d.is_user() && e.source_ref().and_then(credentials_error).is_none()
        }
        SdkError::ServiceError(se) => {
            se.raw().status().is_server_error()
                || se.err().code().is_some_and(|c| {
                    is_throttling(c)
                        || matches!(c, "ServiceUnavailable" | "InternalError" | "Unavailable")
                })
        }
        _ => false,
    }
}

/// An SDK error as an `anyhow` error: `{what}: {one line}`.
pub fn anyhow_error<E, R>(what: impl std::fmt::Display, e: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    anyhow::anyhow!("{what}: {}", describe(&e))
}

/// Maps an SDK error to a provider error; codes ending in `NotFound` (and
/// the given extra codes) mark the resource as gone.
pub fn provider_error<E, R>(context: &str, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let gone = code(&e).is_some_and(|c| {
        c.ends_with("NotFound") || c == "NoSuchEntity" || c == "ResourceNotFoundException"
    });
    let message = format!("{context}: {}", describe(&e));
    if gone {
        ProviderError::not_found(message)
    } else {
        ProviderError::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_action_come_from_the_operation_error_type() {
        assert_eq!(
            service_and_action::<aws_sdk_ec2::operation::create_vpc::CreateVpcError>(),
            ("ec2".to_string(), "CreateVpc".to_string())
        );
        assert_eq!(
            service_and_action::<
                aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupError,
            >(),
            ("logs".to_string(), "CreateLogGroup".to_string())
        );
    }

    #[test]
    fn hints_are_found_only_for_their_own_line() {
        register_hint("XUnitTest: a line", "do the thing");
        assert_eq!(
            hints_for("reading vpc failed: XUnitTest: a line"),
            vec!["do the thing"]
        );
        assert!(hints_for("something else entirely").is_empty());
    }
}
