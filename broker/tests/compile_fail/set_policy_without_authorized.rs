// Replacing the policy in force needs the authorization for SetPolicy.
use broker::authz::Authorizer;

fn replace(authorizer: &Authorizer) {
    let _ = authorizer.set_policy("permit (principal, action, resource);");
}

fn main() {}
