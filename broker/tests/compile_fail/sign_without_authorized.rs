// A handler that forgot the gate: it has the key record, but no authorization to spend.
use broker::keys::KeyManager;
use broker::keys::ops::Scheme;
use broker::store::KeyRecord;

async fn sign(manager: &KeyManager, key: &KeyRecord) {
    let _ = manager.sign(key, Scheme::Ecdsa, Vec::new()).await;
}

fn main() {}
