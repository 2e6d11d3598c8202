//! `run`: keeps a directory of credentials fresh until SIGTERM or SIGINT.
//!
//! Each round attests when the held credentials are due (halfway through the shorter of
//! the certificate's and the attestation token's lives, jittered), gets a JWT for each
//! audience, writes what changed, and sleeps until the next renewal. A failure drops the
//! held credentials, so the next round attests afresh, after [`backoff`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::CliError;
use crate::client::{Agent, Credentials, backoff, renewal_delay};
use crate::files;

/// The shortest sleep between rounds, so that a credential issued already half-spent
/// cannot make the loop spin.
const MIN_SLEEP: Duration = Duration::from_secs(1);

/// Credentials and when to replace them.
struct Held {
    creds: Credentials,
    renew_at: SystemTime,
}

/// SIGTERM and SIGINT.
struct Shutdown {
    terminate: Signal,
    interrupt: Signal,
}

impl Shutdown {
    fn listen() -> Result<Shutdown, CliError> {
        Ok(Shutdown {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Runs until a signal asks it to stop; only a bad audience or a failure to listen for
/// signals ends it with an error, since everything else is retried.
pub(super) async fn run(agent: &Agent, dir: &Path, audiences: &[String]) -> Result<(), CliError> {
    files::token_file_names(audiences.iter().map(String::as_str))?;
    let mut shutdown = Shutdown::listen()?;
    let mut held: Option<Held> = None;
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            outcome = round(agent, dir, audiences, &mut held) => outcome,
            () = shutdown.requested() => break,
        };
        let sleep = match outcome {
            Ok(wake_at) => {
                failures = 0;
                let sleep = wake_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                sleep.max(MIN_SLEEP)
            }
            Err(e) => {
                held = None;
                failures = failures.saturating_add(1);
                let sleep = backoff(failures, rand::random());
                eprintln!(
                    "keybroker-agent: {e} (retrying in {:.1} s)",
                    sleep.as_secs_f64()
                );
                sleep
            }
        };
        tracing::debug!(?sleep, "next round");
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = shutdown.requested() => break,
        }
    }
    eprintln!("keybroker-agent: stopped");
    Ok(())
}

/// One round: attest if due, get the tokens, write. Returns when the next round is due.
async fn round(
    agent: &Agent,
    dir: &Path,
    audiences: &[String],
    held: &mut Option<Held>,
) -> Result<SystemTime, CliError> {
    let now = SystemTime::now();
    let (current, attested) = match held.take() {
        Some(h) if now < h.renew_at => (h, false),
        _ => {
            let creds = agent.attest().await?;
            let until = creds.cert_expires_at.min(creds.token_expires_at);
            let renew_at = later(now, renewal_delay(now, until, now, rand::random()));
            tracing::info!(spiffe_id = %creds.spiffe_id, "attested");
            (Held { creds, renew_at }, true)
        }
    };
    let held = held.insert(current);
    let fetched = SystemTime::now();
    let tokens = agent.get_tokens(&held.creds, audiences).await?;
    if attested {
        files::write_credentials(dir, &held.creds, &tokens)?;
    } else {
        files::write_tokens(dir, &tokens)?;
    }
    if attested || !tokens.is_empty() {
        eprintln!("keybroker-agent: wrote {}", dir.display());
    }
    let next = tokens
        .iter()
        .map(|t| {
            later(
                fetched,
                renewal_delay(fetched, t.expires_at, fetched, rand::random()),
            )
        })
        .fold(held.renew_at, SystemTime::min);
    Ok(next)
}

/// `time + delay`, or `time` if that is past what `SystemTime` holds.
fn later(time: SystemTime, delay: Duration) -> SystemTime {
    time.checked_add(delay).unwrap_or(time)
}
