//! SDK errors flattened at the boundary: a code to branch on and one
//! readable line (`InvalidVpcID.NotFound: The vpc ID 'vpc-1' does not exist`).

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::engine::provider::ProviderError;

/// The service error code, when AWS answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|se| se.code())
}

/// One line: the AWS code and message, or the transport failure.
pub fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("Error"),
            se.message().unwrap_or("(no message)")
        ),
        None => format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(e)
        ),
    }
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
