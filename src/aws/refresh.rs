//! The per-refresh describe cache: one request per API family per refresh,
//! shared by every kind that reads it, and started before state is read.
//!
//! During a plan's refresh (between [`Refresh::begin`] and [`Refresh::end`],
//! which the engine calls through `Provider::begin_refresh`/`end_refresh`)
//! each API family is described ONCE and the answer is shared:
//!
//! - EC2 families are listed by devstack's own ownership tags
//!   ([`tags::owner_filters`]): security groups (groups and their rules),
//!   route tables (tables and their associations), addresses (EIPs and
//!   their associations), volumes (volumes and their attachments), VPCs,
//!   subnets, internet gateways, instances. The listing needs no state, so
//!   the engine starts it alongside the state read (`engine::plan::prefetch`).
//!   A kind reading ids from state takes them from the listing; an id the
//!   listing lacks (its tags were removed, or it is gone) is described by id,
//!   which costs a second round only in that case.
//! - IAM is read with one `GetAccountAuthorizationDetails` (see
//!   [`super::iam_details`]); named things (the table, the log group, the
//!   launch template, SSM parameters, secrets) by the names the stack knows.
//!
//! Outside a refresh (apply's create/update paths, import) nothing is cached:
//! [`Refresh::shared`] returns `None` and kinds read by id as before, so a
//! cached answer can never hide a change an apply just made.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::tags;
use crate::engine::provider::{Meta, ProviderResult};

type Cell = Arc<OnceCell<Arc<dyn Any + Send + Sync>>>;

struct Session {
    meta: Meta,
    cells: HashMap<String, Cell>,
}

/// Shared by every kind of one provider.
#[derive(Default)]
pub struct Refresh {
    session: Mutex<Option<Session>>,
}

impl Refresh {
    pub fn new() -> Arc<Refresh> {
        Arc::new(Refresh::default())
    }

    /// Starts caching (a refresh already under way is kept).
    pub fn begin(&self, meta: &Meta) {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if s.as_ref().is_none_or(|s| &s.meta != meta) {
            *s = Some(Session {
                meta: meta.clone(),
                cells: HashMap::new(),
            });
        }
    }

    /// Stops caching and forgets every answer.
    pub fn end(&self) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn cell(&self, key: &str) -> Option<(Meta, Cell)> {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let s = s.as_mut()?;
        let cell = s.cells.entry(key.to_string()).or_default().clone();
        Some((s.meta.clone(), cell))
    }

    /// The answer for `key`, fetched once per refresh however many kinds
    /// ask (concurrent askers wait for the first); `None` outside a refresh.
    /// A failed fetch is not cached: the next asker tries again.
    pub async fn shared<T, F, Fut>(&self, key: &str, fetch: F) -> Option<ProviderResult<Arc<T>>>
    where
        T: Send + Sync + 'static,
        F: FnOnce(Meta) -> Fut,
        Fut: Future<Output = ProviderResult<T>>,
    {
        let (meta, cell) = self.cell(key)?;
        let got = cell
            .get_or_try_init(|| async move {
                fetch(meta)
                    .await
                    .map(|v| Arc::new(v) as Arc<dyn Any + Send + Sync>)
            })
            .await;
        Some(got.map(|v| {
            v.clone().downcast::<T>().unwrap_or_else(|_| {
                // One key, one type: a mismatch is a programming error in
                // this module's callers, caught by the unit tests.
                panic!("refresh cache key {key} holds another type")
            })
        }))
    }

    /// The stack's owner-tagged listing of an EC2 family (cached during a
    /// refresh, described afresh outside one).
    pub async fn owned<T, D, Fut>(
        &self,
        family: &str,
        meta: &Meta,
        describe: D,
    ) -> ProviderResult<Arc<Vec<T>>>
    where
        T: Send + Sync + 'static,
        D: Fn(Vec<aws_sdk_ec2::types::Filter>) -> Fut,
        Fut: Future<Output = ProviderResult<Vec<T>>>,
    {
        match self
            .shared(family, |m| describe(tags::owner_filters(&m)))
            .await
        {
            Some(got) => got,
            None => Ok(Arc::new(describe(tags::owner_filters(meta)).await?)),
        }
    }

    /// Warms a family's owner-tagged listing; errors surface on the read.
    pub async fn warm<T, D, Fut>(&self, family: &str, describe: D)
    where
        T: Send + Sync + 'static,
        D: Fn(Vec<aws_sdk_ec2::types::Filter>) -> Fut,
        Fut: Future<Output = ProviderResult<Vec<T>>>,
    {
        let _ = self
            .shared(family, |m| describe(tags::owner_filters(&m)))
            .await;
    }

    /// Resources of an EC2 family by id: from the refresh's owner-tagged
    /// listing where it has them, the rest described by id (`id_filter`);
    /// outside a refresh, all by id, as one request.
    pub async fn by_ids<T, D, Fut>(
        &self,
        family: &str,
        id_filter: &str,
        ids: Vec<String>,
        id_of: impl Fn(&T) -> Option<&str>,
        describe: D,
    ) -> ProviderResult<Vec<T>>
    where
        T: Clone + Send + Sync + 'static,
        D: Fn(Vec<aws_sdk_ec2::types::Filter>) -> Fut,
        Fut: Future<Output = ProviderResult<Vec<T>>>,
    {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let owned = self
            .shared(family, |m| describe(tags::owner_filters(&m)))
            .await;
        let owned = match owned {
            None => return describe(vec![tags::filter(id_filter, ids)]).await,
            Some(owned) => owned?,
        };
        let mut out: Vec<T> = owned
            .iter()
            .filter(|t| id_of(t).is_some_and(|i| ids.iter().any(|x| x == i)))
            .cloned()
            .collect();
        let missing: Vec<String> = ids
            .into_iter()
            .filter(|i| !out.iter().any(|t| id_of(t) == Some(i.as_str())))
            .collect();
        if !missing.is_empty() {
            out.extend(describe(vec![tags::filter(id_filter, missing)]).await?);
        }
        Ok(out)
    }

    /// `fetch`'s answer, shared under `key` during a refresh, fetched
    /// afresh outside one.
    pub async fn or_fetch<T, F, Fut>(&self, key: &str, fetch: F) -> ProviderResult<T>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = ProviderResult<T>>,
    {
        let mut fetch = Some(fetch);
        let shared = self
            .shared(key, |_| {
                let f = fetch.take();
                async move {
                    match f {
                        Some(f) => f().await,
                        None => Err(crate::engine::provider::ProviderError::new("unreachable")),
                    }
                }
            })
            .await;
        match shared {
            Some(got) => Ok(T::clone(&*got?)),
            None => match fetch {
                Some(f) => f().await,
                None => Err(crate::engine::provider::ProviderError::new("unreachable")),
            },
        }
    }

    /// True while a refresh is under way.
    pub fn active(&self) -> bool {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn meta() -> Meta {
        Meta {
            stack: "s".into(),
            env: "e".into(),
        }
    }

    #[tokio::test]
    async fn one_fetch_per_key_during_a_refresh_none_outside() {
        let r = Refresh::default();
        let calls = AtomicUsize::new(0);
        let fetch = |_m: Meta| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, crate::engine::provider::ProviderError>(vec![1u32, 2])
        };
        assert!(
            r.shared("k", fetch).await.is_none(),
            "no cache outside a refresh"
        );
        r.begin(&meta());
        let (a, b) = futures::join!(r.shared("k", fetch), r.shared("k", fetch));
        assert_eq!(*a.unwrap().unwrap(), vec![1, 2]);
        assert_eq!(*b.unwrap().unwrap(), vec![1, 2]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "two askers, one fetch");
        r.end();
        assert!(!r.active());
        r.begin(&meta());
        r.shared("k", fetch).await.unwrap().unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "a new refresh fetches again"
        );
    }

    #[tokio::test]
    async fn by_ids_takes_the_listing_and_describes_only_what_it_lacks() {
        let r = Refresh::default();
        r.begin(&meta());
        let by_id_calls = std::sync::Mutex::new(Vec::<Vec<String>>::new());
        let describe = |filters: Vec<aws_sdk_ec2::types::Filter>| {
            let f = filters[0].clone();
            let owner = f.name().is_some_and(|n| n.starts_with("tag:"));
            if !owner {
                by_id_calls
                    .lock()
                    .unwrap()
                    .push(f.values().iter().map(|v| v.to_string()).collect());
            }
            async move {
                Ok::<_, crate::engine::provider::ProviderError>(if owner {
                    vec!["a".to_string(), "b".to_string()]
                } else {
                    f.values().iter().map(|v| v.to_string()).collect()
                })
            }
        };
        let got = r
            .by_ids(
                "f",
                "id",
                vec!["a".into(), "c".into()],
                |s: &String| Some(s.as_str()),
                describe,
            )
            .await
            .unwrap();
        assert_eq!(got, vec!["a".to_string(), "c".to_string()]);
        assert_eq!(*by_id_calls.lock().unwrap(), vec![vec!["c".to_string()]]);
    }
}
