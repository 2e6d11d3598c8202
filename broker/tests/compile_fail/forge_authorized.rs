// A handler that tries to make its own authorization instead of asking the gate.
use broker::authz::Action;
use broker::identity::SpiffeId;
use broker::request::{Authorized, AuthorizedResource};

fn forge(caller: SpiffeId) -> Authorized {
    Authorized {
        caller,
        action: Action::Sign,
        resource: AuthorizedResource::Key("pay".into()),
        claims: None,
        kem: None,
        _in_flight: None,
    }
}

fn main() {}
