//! [`CachedSource`]: a TTL cache in front of a [`SecretSource`], with one
//! backend read per secret however many requests miss at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;
use moka::future::Cache;
use moka::ops::compute::Op;
use tokio::time::Instant;

use super::{Fetched, SecretError, SecretRef, SecretSource, SecretValue};

/// Most secrets kept at once; a config names far fewer.
const MAX_ENTRIES: u64 = 10_000;

/// Most values derived from one read; more only after many reloads within
/// one TTL (each reload's rules derive under new keys), and then the list
/// starts over.
const MAX_DERIVED: usize = 16;

/// A hook told about every value freshly read from the backend (the proxy
/// registers these with the secret scanner).
pub type FillHook = Arc<dyn Fn(&SecretRef, &SecretValue) + Send + Sync>;

/// A cached secret and when it stops being served.
struct Entry {
    value: SecretValue,
    /// `min(cache ttl, lease)`, for moka's own (memory) eviction.
    ttl: Duration,
    /// On tokio's clock, so paused-time tests drive expiry.
    expires_at: Instant,
    /// Header values built from this read, by the key of what built them
    /// (an injection). They hold the secret too, so they live exactly as
    /// long as the entry: dropping it (expiry, sweep, invalidation) drops
    /// them, and their bytes are zeroized then (see `inject`).
    derived: ArcSwapOption<Vec<(u64, HeaderValue)>>,
}

/// A secret as the cache holds it: cloning shares it (no copy of the
/// bytes), and what a caller derives from it (an injected header) is kept
/// with it by [`SecretHandle::derive`], until the value is read again.
#[derive(Clone)]
pub struct SecretHandle(Arc<Entry>);

impl SecretHandle {
    /// The secret bytes (see [`SecretValue::expose_secret`]).
    pub fn expose_secret(&self) -> &[u8] {
        self.0.value.expose_secret()
    }

    /// The header value `key` derives from this read: built by `build` the
    /// first time, then shared (a reference count, not a copy) by every
    /// request the cache serves this same read to. A new read starts with
    /// none, so a rotated value is never sent in its old header, and the
    /// built value is dropped with the read rather than kept past its TTL.
    ///
    /// # Errors
    /// Whatever `build` returns; nothing is kept then.
    pub fn derive<E>(
        &self,
        key: u64,
        build: impl FnOnce(&[u8]) -> Result<HeaderValue, E>,
    ) -> Result<HeaderValue, E> {
        if let Some(list) = self.0.derived.load().as_deref()
            && let Some((_, v)) = list.iter().find(|(k, _)| *k == key)
        {
            return Ok(v.clone());
        }
        let value = build(self.0.value.expose_secret())?;
        self.0.derived.rcu(|current| {
            let mut list = match current.as_deref() {
                Some(l) if l.len() < MAX_DERIVED => l.clone(),
                _ => Vec::new(),
            };
            if !list.iter().any(|(k, _)| *k == key) {
                list.push((key, value.clone()));
            }
            Some(Arc::new(list))
        });
        Ok(value)
    }

    /// Observes when the read is dropped (tests).
    #[cfg(test)]
    pub(crate) fn watch(&self) -> std::sync::Weak<impl Sized + use<>> {
        Arc::downgrade(&self.0)
    }
}

impl std::fmt::Debug for SecretHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretHandle(<redacted, {} bytes>)", self.0.value.len())
    }
}

/// Lets moka drop entries after their own TTL (a memory backstop; the
/// serving decision is [`Entry::expires_at`]).
struct EntryExpiry;

impl moka::Expiry<SecretRef, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &SecretRef,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A cache of secrets in front of a [`SecretSource`].
///
/// - A value is served for `min(ttl, lease)` after it was read (`lease` is
///   what the backend said, if anything; a zero lease means "none").
/// - Concurrent misses for one ref wait on **one** backend read
///   (moka `try_get_with`).
/// - Errors are **not** cached: the next request retries, so recovery is
///   automatic once the backend is back.
/// - **Fail closed:** an expired value is never served, not even while the
///   backend is down. A stale credential would keep working past the point
///   where an operator may have rotated or revoked it, and a request that
///   needs a secret is exactly the one that must fail visibly (503) rather
///   than quietly. Choose `ttl` for the outage you want to ride out.
pub struct CachedSource {
    source: Arc<dyn SecretSource>,
    cache: Cache<SecretRef, Arc<Entry>>,
    /// The entries last seen fresh, read under a shared lock before moka:
    /// a cached injection is on every request of a tool's host, and moka's
    /// lookup (read-log bookkeeping, a future per call) was most of what an
    /// injection cost. Served only while [`Entry::expires_at`] holds; the
    /// refs come from config, so it holds at most one entry per configured
    /// secret.
    hot: RwLock<HashMap<SecretRef, Arc<Entry>>>,
    /// Bumped by [`CachedSource::invalidate_all`], so a read that was in
    /// flight across it does not put its entry back into `hot`.
    epoch: AtomicU64,
    ttl: Duration,
    fetches: AtomicU64,
    hooks: ArcSwap<Vec<FillHook>>,
}

impl CachedSource {
    /// Caches values read from `source` for `ttl` (or the lease, if shorter).
    /// A zero `ttl` disables caching but still coalesces concurrent reads.
    pub fn new(source: Arc<dyn SecretSource>, ttl: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(MAX_ENTRIES)
            .expire_after(EntryExpiry)
            .build();
        Self {
            source,
            cache,
            hot: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            ttl,
            fetches: AtomicU64::new(0),
            hooks: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// The secret `r`, from the cache or (on a miss or expiry) the backend.
    pub async fn get(&self, r: &SecretRef) -> Result<SecretValue, SecretError> {
        Ok(self.get_shared(r).await?.0.value.clone())
    }

    /// Like [`CachedSource::get`], without copying the value.
    pub async fn get_shared(&self, r: &SecretRef) -> Result<SecretHandle, SecretError> {
        if let Some(entry) = self.fresh(r) {
            return Ok(SecretHandle(entry));
        }
        // Boxed: the miss path's futures are large, and every caller's
        // future (a request's) would otherwise carry them inline.
        Box::pin(self.get_or_fetch(r)).await.map(SecretHandle)
    }

    /// A fresh entry in `hot`, without touching moka.
    fn fresh(&self, r: &SecretRef) -> Option<Arc<Entry>> {
        let hot = self.hot.read().ok()?;
        let entry = hot.get(r)?;
        (Instant::now() < entry.expires_at).then(|| Arc::clone(entry))
    }

    fn remember(&self, r: &SecretRef, entry: &Arc<Entry>, epoch: u64) {
        if let Ok(mut hot) = self.hot.write()
            && self.epoch.load(Ordering::Acquire) == epoch
        {
            // Expired values are dropped (and so zeroed) here rather than
            // kept until their ref is asked for again, which may be never
            // once a reload removes the rule.
            let now = Instant::now();
            hot.retain(|_, e| now < e.expires_at);
            hot.insert(r.clone(), Arc::clone(entry));
        }
    }

    /// How many values the lock-free-read map holds (tests).
    #[cfg(test)]
    fn hot_len(&self) -> usize {
        self.hot.read().map(|h| h.len()).unwrap_or(0)
    }

    async fn get_or_fetch(&self, r: &SecretRef) -> Result<Arc<Entry>, SecretError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut attempt = 0;
        loop {
            let filled_here = AtomicBool::new(false);
            let entry = self
                .cache
                .try_get_with_by_ref(r, self.fill(r, &filled_here))
                .await
                .map_err(|e| (*e).clone())?;
            // A value this call (or a read it joined) just fetched is fresh;
            // only an older entry can have expired, and it is replaced once.
            if filled_here.load(Ordering::Relaxed)
                || attempt > 0
                || Instant::now() < entry.expires_at
            {
                self.remember(r, &entry, epoch);
                return Ok(entry);
            }
            attempt += 1;
            self.remove_if_still(r, entry).await;
        }
    }

    /// Removes `r` from moka if it still maps to `seen`: another task may
    /// already have stored a fresh entry, which must stay.
    async fn remove_if_still(&self, r: &SecretRef, seen: Arc<Entry>) {
        self.cache
            .entry_by_ref(r)
            .and_compute_with(|current| async move {
                match current {
                    Some(e) if Arc::ptr_eq(e.value(), &seen) => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
    }

    async fn fill(
        &self,
        r: &SecretRef,
        filled_here: &AtomicBool,
    ) -> Result<Arc<Entry>, SecretError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let Fetched { value, lease } = self.source.fetch(r).await?;
        filled_here.store(true, Ordering::Relaxed);
        let ttl = match lease {
            Some(lease) if !lease.is_zero() => lease.min(self.ttl),
            _ => self.ttl,
        };
        for hook in self.hooks.load().iter() {
            hook(r, &value);
        }
        Ok(Arc::new(Entry {
            value,
            ttl,
            expires_at: Instant::now() + ttl,
            derived: ArcSwapOption::empty(),
        }))
    }

    /// How many backend reads this cache has started (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Registers `f`, called with every value freshly read from the backend
    /// (not with cache hits), before the waiting requests get it.
    pub fn on_fill(&self, f: FillHook) {
        self.hooks.rcu(|hooks| {
            let mut hooks = Vec::clone(hooks);
            hooks.push(Arc::clone(&f));
            hooks
        });
    }

    /// Drops every cached value (after a config reload, say).
    pub fn invalidate_all(&self) {
        if let Ok(mut hot) = self.hot.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            hot.clear();
        }
        self.cache.invalidate_all();
    }

    /// Drops every expired value now, from both maps, rather than at the
    /// next write or lookup: on an idle proxy a value (and what was derived
    /// from it) would otherwise stay in memory long past its TTL. Requests
    /// still holding a handle keep it until they finish.
    pub async fn sweep(&self) {
        let now = Instant::now();
        let stale = self
            .hot
            .read()
            .is_ok_and(|hot| hot.values().any(|e| now >= e.expires_at));
        if stale && let Ok(mut hot) = self.hot.write() {
            hot.retain(|_, e| now < e.expires_at);
        }
        // By our own clock, not moka's: its expiry is a memory backstop on
        // the wall clock, and this must hold under paused test time too.
        let expired: Vec<(Arc<SecretRef>, Arc<Entry>)> = self
            .cache
            .iter()
            .filter(|(_, e)| now >= e.expires_at)
            .collect();
        for (r, entry) in expired {
            self.remove_if_still(&r, entry).await;
        }
        // moka's own logs hold the values they recorded until processed.
        self.cache.run_pending_tasks().await;
    }

    /// How many reads the cache holds in memory: the fast map's count
    /// (exact), or moka's if larger (exact once its bookkeeping has run,
    /// which every sweep does).
    pub fn cached(&self) -> u64 {
        let hot = self.hot.read().map_or(0, |h| h.len() as u64);
        hot.max(self.cache.entry_count())
    }

    /// Sweeps `cache` every `every` until the cache is dropped.
    pub fn spawn_sweeper(cache: &Arc<CachedSource>, every: Duration) {
        let weak = Arc::downgrade(cache);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { break };
                cache.sweep().await;
            }
        });
    }

    /// The backend's one-line description.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The backend's health.
    pub async fn health(&self) -> Result<(), SecretError> {
        self.source.health().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;

    use super::*;

    /// A backend whose answers the test sets, counting reads.
    struct Fake {
        answer: Mutex<Result<Fetched, SecretError>>,
        delay: Duration,
    }

    impl Fake {
        fn new(value: &str, lease: Option<Duration>) -> Arc<Self> {
            Arc::new(Self {
                answer: Mutex::new(Ok(Fetched {
                    value: SecretValue::new(value.as_bytes().to_vec()),
                    lease,
                })),
                delay: Duration::from_millis(50),
            })
        }
        fn set(&self, answer: Result<&str, SecretError>) {
            *self.answer.lock().unwrap() = answer.map(|v| Fetched {
                value: SecretValue::new(v.as_bytes().to_vec()),
                lease: None,
            });
        }
    }

    impl SecretSource for Fake {
        fn fetch<'a>(&'a self, _: &'a SecretRef) -> BoxFuture<'a, Result<Fetched, SecretError>> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                self.answer.lock().unwrap().clone()
            })
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        fn health<'a>(&'a self) -> BoxFuture<'a, Result<(), SecretError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn r(s: &str) -> SecretRef {
        s.parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousand_concurrent_misses_make_one_fetch() {
        let cache = Arc::new(CachedSource::new(
            Fake::new("v1", None),
            Duration::from_secs(60),
        ));
        let secret = r("tools/github#token");
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (cache, secret) = (Arc::clone(&cache), secret.clone());
                tokio::spawn(async move { cache.get(&secret).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose_secret(), b"v1");
        }
        assert_eq!(cache.fetches(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn value_expires_after_ttl() {
        let fake = Fake::new("v1", None);
        let cache = CachedSource::new(fake.clone(), Duration::from_secs(300));
        let secret = r("a#b");
        assert_eq!(cache.get(&secret).await.unwrap().expose_secret(), b"v1");
        fake.set(Ok("v2"));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(cache.get(&secret).await.unwrap().expose_secret(), b"v1");
        assert_eq!(cache.fetches(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get(&secret).await.unwrap().expose_secret(), b"v2");
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn shorter_lease_wins_over_ttl() {
        let cache = CachedSource::new(
            Fake::new("v1", Some(Duration::from_secs(10))),
            Duration::from_secs(300),
        );
        let secret = r("a#b");
        cache.get(&secret).await.unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        cache.get(&secret).await.unwrap();
        assert_eq!(cache.fetches(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.get(&secret).await.unwrap();
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_not_cached_and_recovery_is_automatic() {
        let fake = Fake::new("v1", None);
        let cache = CachedSource::new(fake.clone(), Duration::from_secs(300));
        let secret = r("a#b");
        fake.set(Err(SecretError::unavailable(&secret, "down")));
        let err = cache.get(&secret).await.unwrap_err();
        assert_eq!(err.code(), "secret_unavailable");
        assert!(cache.get(&secret).await.is_err());
        assert_eq!(cache.fetches(), 2, "each request retried the backend");
        fake.set(Ok("v1"));
        assert_eq!(cache.get(&secret).await.unwrap().expose_secret(), b"v1");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_value_is_not_served_during_outage() {
        let fake = Fake::new("v1", None);
        let cache = CachedSource::new(fake.clone(), Duration::from_secs(60));
        let secret = r("a#b");
        cache.get(&secret).await.unwrap();
        fake.set(Err(SecretError::unavailable(&secret, "down")));
        // Still fresh: served from the cache despite the outage.
        assert!(cache.get(&secret).await.is_ok());
        tokio::time::advance(Duration::from_secs(61)).await;
        let err = cache.get(&secret).await.unwrap_err();
        assert_eq!(err.code(), "secret_unavailable");
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_all_forces_a_new_read() {
        let fake = Fake::new("v1", None);
        let cache = CachedSource::new(fake.clone(), Duration::from_secs(300));
        let secret = r("a#b");
        assert_eq!(cache.get(&secret).await.unwrap().expose_secret(), b"v1");
        fake.set(Ok("v2"));
        assert_eq!(cache.get(&secret).await.unwrap().expose_secret(), b"v1");
        cache.invalidate_all();
        assert_eq!(cache.get(&secret).await.unwrap().expose_secret(), b"v2");
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_values_are_not_kept() {
        let cache = CachedSource::new(Fake::new("v1", None), Duration::from_secs(60));
        cache.get(&r("a#b")).await.unwrap();
        assert_eq!(cache.hot_len(), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        // Another secret's read sweeps the expired one out.
        cache.get(&r("c#d")).await.unwrap();
        assert_eq!(cache.hot_len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_frees_expired_values_and_what_was_derived() {
        let cache = Arc::new(CachedSource::new(
            Fake::new("v1", None),
            Duration::from_secs(60),
        ));
        let read = cache.get_shared(&r("a#b")).await.unwrap();
        let header = read
            .derive(7, |v| {
                HeaderValue::from_bytes(&[b"Bearer ", v].concat()).map_err(|_| ())
            })
            .unwrap();
        assert_eq!(header, "Bearer v1");
        // The same read hands out the same derived value.
        let again = read.derive(7, |_| Err(())).unwrap();
        assert_eq!(again.as_bytes().as_ptr(), header.as_bytes().as_ptr());
        let watch = read.watch();
        drop((read, header, again));

        // Fresh: a sweep keeps it.
        cache.sweep().await;
        assert!(watch.upgrade().is_some());
        assert_eq!(cache.hot_len(), 1);

        // Expired, nothing else asked for: the sweeper frees it (and with it
        // the derived header) without waiting for the next request.
        CachedSource::spawn_sweeper(&cache, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(61)).await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(
            watch.upgrade().is_none(),
            "an expired read is still in memory"
        );
        assert_eq!(cache.hot_len(), 0);
        assert_eq!(cache.cache.iter().count(), 0);
    }

    #[tokio::test]
    async fn on_fill_sees_fresh_values_only() {
        let cache = CachedSource::new(Fake::new("v1", None), Duration::from_secs(60));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        cache.on_fill(Arc::new(move |r, v| {
            sink.lock()
                .unwrap()
                .push((r.to_string(), v.expose_secret().to_vec()));
        }));
        let secret = r("a#b");
        cache.get(&secret).await.unwrap();
        cache.get(&secret).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("a#b".to_owned(), b"v1".to_vec())]
        );
    }
}
