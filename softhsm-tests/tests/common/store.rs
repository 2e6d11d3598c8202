//! The broker's store opened by a second process, as `keybroker ca` does: unlocked with
//! the backend that protects it (`[store] protect_with`), which this process opens too.
//! Not for a store that a TPM protects while the broker runs (one swtpm connection).

use std::path::Path;

use broker::config::Config;
use broker::store::sqlite::SqliteStore;

/// The store of the broker whose directory is `dir`, unlocked.
pub fn open_unlocked(dir: &Path) -> SqliteStore {
    let config = Config::load(&dir.join("config.toml")).expect("the broker's configuration");
    // On a thread of its own: the caller may be a test's async runtime.
    std::thread::scope(|scope| {
        scope
            .spawn(|| broker::store_key::open_offline(&config, false))
            .join()
            .expect("the unlocking thread")
    })
    .unwrap_or_else(|e| panic!("opening the broker's store: {e}"))
}
