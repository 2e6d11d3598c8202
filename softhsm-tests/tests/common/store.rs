//! The broker's store opened by a second process, as `keybroker ca` does: unlocked with
//! the backend that protects it (`[store] protect_with`), which this process opens too.
//! Not for a store that a TPM protects while the broker runs (one swtpm connection).

use std::path::Path;

use broker::config::Config;
use broker::store::sqlite::SqliteStore;

/// The store of the broker whose directory is `dir`, unlocked.
pub fn open_unlocked(dir: &Path) -> SqliteStore {
    let config = Config::load(&dir.join("config.toml")).expect("the broker's configuration");
    let store = SqliteStore::open(&config.store.path).expect("the broker's store");
    if let Some(name) = config.store.protect_with.as_deref() {
        let backends = broker::server::open_configured(&config, Some(name))
            .unwrap_or_else(|e| panic!("opening backend {name:?}: {e}"));
        // On a thread of its own: the caller may be a test's async runtime.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime
                    .block_on(broker::store_key::open(
                        &store,
                        &backends,
                        Some(name),
                        false,
                    ))
                    .unwrap_or_else(|e| panic!("unlocking the store: {e}"));
            });
        });
    }
    store
}
