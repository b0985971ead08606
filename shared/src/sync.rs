//! One policy for poisoned locks. The `std` locks in natter guard caches,
//! counters and small maps, updated in short sections that call nothing
//! that can fail half-way; a panic while one is held (a bug elsewhere in
//! that task) leaves the data as consistent as any other moment. So a
//! poisoned lock is used as it is: the task that panicked is gone, and the
//! rest of the process goes on instead of panicking in turn.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `lock`, poisoned or not.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `lock`, poisoned or not.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Exclusive use of keys (users, conversations), taken all at once: a task
/// that needs several keys waits until none of them is held, then holds them
/// all, so two tasks can never each hold a key the other waits for. Keys are
/// exact (no sharding), so unrelated keys never wait for each other.
#[derive(Default)]
pub struct KeyLocks {
    held: Mutex<std::collections::HashSet<String>>,
    released: tokio::sync::Notify,
}

/// Held keys; dropping it releases them.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    keys: Vec<String>,
}

impl KeyLocks {
    /// Waits until none of `keys` is held and holds them all.
    pub async fn lock<S: AsRef<str>>(&self, keys: impl IntoIterator<Item = S>) -> KeyGuard<'_> {
        let mut keys: Vec<String> = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        keys.sort_unstable();
        keys.dedup();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between wakes it.
            released.as_mut().enable();
            {
                let mut held = lock(&self.held);
                if keys.iter().all(|k| !held.contains(k)) {
                    held.extend(keys.iter().cloned());
                    return KeyGuard { locks: self, keys };
                }
            }
            released.await;
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        {
            let mut held = lock(&self.locks.held);
            for key in &self.keys {
                held.remove(key);
            }
        }
        self.locks.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A task waits for a key another task holds, not for other keys, and
    /// gets it when it is released.
    #[tokio::test]
    async fn keys_are_exclusive_and_released_on_drop() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock(["a", "b"]).await;
        // A disjoint set is not held up.
        drop(locks.lock(["c"]).await);
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _guard = locks.lock(["b", "c", "b"]).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "took a key that was held");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a released key was not taken")
            .unwrap();
        // Everything is free again.
        drop(locks.lock(["a", "b", "c"]).await);
    }
}
