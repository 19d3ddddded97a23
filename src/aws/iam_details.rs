//! IAM read in one request per refresh: `GetAccountAuthorizationDetails`
//! filtered to roles, shared by the four IAM kinds (roles, their inline
//! policies, their managed-policy attachments, and the instance profiles
//! that hold them).
//!
//! Why this and not one `Get*` per resource: the stack's IAM is 2 roles,
//! 2 inline policies, 2 attachments and 2 instance profiles: 8 requests
//! (GetRole, GetRolePolicy, ListAttachedRolePolicies and GetInstanceProfile
//! per role), all concurrent. One `GetAccountAuthorizationDetails` with
//! `Filter=Role` returns every role of the account with its inline
//! policies, attached policies, instance profiles and tags. The filter
//! keeps AWS managed policies (about 1,000 of them, several MB) and users
//! and groups out of the answer: only `Role` is asked for, never
//! `AWSManagedPolicy` or `LocalManagedPolicy` (no kind reads those).
//!
//! Where it stops paying: the answer grows with the account's roles, and
//! its pages are serial (each `Marker` needs the previous answer). One page
//! holds up to [`MAX_ITEMS`] roles, so up to that many the whole IAM read
//! is one request in the first round trip. Beyond it the answer is marked
//! incomplete and NOT paged further: the roles the first page lacks are
//! read with the per-resource `Get*` calls, concurrently (one more round
//! trip, instead of one per extra page). A role the complete answer lacks
//! is gone; an instance profile no role holds is read with
//! `GetInstanceProfile` (it may exist with no role in it).
//!
//! Outside a refresh this module answers nothing and the kinds use `Get*`.

use std::sync::Arc;

use aws_sdk_iam::types::{EntityType, RoleDetail};

use super::errors::provider_error;
use super::refresh::Refresh;
use crate::engine::provider::ProviderResult;

/// Roles per page; AWS caps `MaxItems` at 1,000.
pub const MAX_ITEMS: i32 = 1000;

const KEY: &str = "iam:GetAccountAuthorizationDetails";

/// The account's roles, as one page of `GetAccountAuthorizationDetails`.
pub struct Details {
    pub roles: Vec<RoleDetail>,
    /// False when the account has more roles than one page holds.
    pub complete: bool,
}

impl Details {
    pub fn role(&self, name: &str) -> Option<&RoleDetail> {
        self.roles.iter().find(|r| r.role_name() == Some(name))
    }

    /// What the answer says about a role: `Some(Some)` found, `Some(None)`
    /// gone (the answer is complete), `None` unknown (ask by name).
    pub fn lookup(&self, name: &str) -> Option<Option<&RoleDetail>> {
        match self.role(name) {
            Some(r) => Some(Some(r)),
            None if self.complete => Some(None),
            None => None,
        }
    }
}

async fn fetch(iam: &aws_sdk_iam::Client) -> ProviderResult<Details> {
    let out = iam
        .get_account_authorization_details()
        .filter(EntityType::Role)
        .max_items(MAX_ITEMS)
        .send()
        .await
        .map_err(|e| provider_error("GetAccountAuthorizationDetails", e))?;
    Ok(Details {
        roles: out.role_detail_list().to_vec(),
        complete: !out.is_truncated(),
    })
}

/// The refresh's IAM answer (fetched once, shared); `None` outside one.
pub async fn details(
    refresh: &Refresh,
    iam: &aws_sdk_iam::Client,
) -> Option<ProviderResult<Arc<Details>>> {
    refresh.shared(KEY, |_| fetch(iam)).await
}

/// Starts the refresh's IAM read.
pub async fn warm(refresh: &Refresh, iam: &aws_sdk_iam::Client) {
    let _ = details(refresh, iam).await;
}
