//! Per-key async locks, so concurrent RPCs on the same volume or snapshot run one at a time while
//! calls on different volumes proceed in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held locks; released on drop.
pub struct Held(#[allow(dead_code)] Vec<OwnedMutexGuard<()>>);

impl KeyedLocks {
    /// Locks every key, in sorted order so two callers can never deadlock on each other.
    pub async fn lock(&self, keys: &[String]) -> Held {
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let mutexes: Vec<_> = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds or waits for, so the map does not grow without bound.
            map.retain(|_, m| Arc::strong_count(m) > 1);
            keys.iter()
                .map(|k| map.entry((*k).clone()).or_default().clone())
                .collect()
        };
        let mut held = Vec::with_capacity(mutexes.len());
        for m in mutexes {
            held.push(m.lock_owned().await);
        }
        Held(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn same_key_is_serialized() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (locks, inside, max) = (locks.clone(), inside.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                let keys = if i % 2 == 0 {
                    vec!["a".to_string(), "b".to_string()]
                } else {
                    vec!["b".to_string(), "a".to_string()]
                };
                let _held = locks.lock(&keys).await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
    }
}
