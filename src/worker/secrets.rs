//! The worker's two secrets, read from Secrets Manager with the instance
//! role: the Claude credentials and the GitHub App key.
//!
//! A secret's value only ever lives in a [`SecretString`], whose `Debug`
//! and `Display` print a placeholder, so no log line, error chain or panic
//! message can carry it. Error messages name the secret id, never the value.

use std::fmt;

use anyhow::Context as _;

/// A secret value; it prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The value, for the one place that must write or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads one secret's string value.
pub async fn fetch(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> anyhow::Result<SecretString> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        // The SDK's error never holds the value: only the id and the code.
        .map_err(|e| {
            crate::aws::errors::anyhow_error(format!("cannot read the secret {secret_id}"), e)
        })?;
    out.secret_string
        .map(SecretString)
        .with_context(|| format!("the secret {secret_id} has no string value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
