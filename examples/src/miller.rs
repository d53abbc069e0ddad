//! The miller programs' demo handler: the seed's `send_invitation_mail` for `activity.INVITE` of `zhihu`.
//!
//! ```python
//! @on('activity.INVITE', 'zhihu')
//! def send_invitation_mail(event, data):
//!     data = json.loads(data)
//!     member_id = int(data['MemberId'])
//! ```
//!
//! Here it parses `MemberId` (a number, or a string of one) from the JSON
//! data, logs it, and, when the config says `set demo_output FILE;`, appends
//! `start <data>` to the file, waits `set demo_delay_ms N;` (default 0),
//! then appends `done member=<id> <data>`: tests observe which jobs ran and
//! that a worker was killed in the middle of one. Data that is not JSON
//! with a `MemberId` fails the try (and is retried, then buried).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use miller_core::dispatch::{HandlerError, MillerConfig, Registry};

/// The app of the demo handler.
pub const APP: &str = "zhihu";
/// The event it handles.
pub const EVENT: &str = "activity.INVITE";
/// Its stable name.
pub const HANDLER: &str = "send_invitation_mail";

/// The registry of the programs: the demo handler, configured by `config`'s
/// `set` settings, with the file's dedupe rules applied.
///
/// # Errors
/// A setting does not parse, or a dedupe rule names an unknown handler.
pub fn registry(config: &MillerConfig) -> Result<Registry, String> {
    let output = config.setting("demo_output").map(str::to_owned);
    let delay = match config.setting("demo_delay_ms") {
        None => Duration::ZERO,
        Some(v) => {
            Duration::from_millis(v.parse().map_err(|e| format!("demo_delay_ms {v:?}: {e}"))?)
        }
    };
    let output = Arc::new(output);
    let mut registry = Registry::new();
    registry.on(EVENT, APP, HANDLER, move |_event, data| {
        let output = output.clone();
        async move { send_invitation_mail(data, output.as_deref(), delay).await }
    });
    config
        .apply_dedupe(&mut registry)
        .map_err(|e| e.to_string())?;
    Ok(registry)
}

/// The member id of an invitation's JSON data.
///
/// # Errors
/// Not JSON, or no `MemberId` that is a whole number.
pub fn member_id(data: &[u8]) -> Result<u64, HandlerError> {
    let v: serde_json::Value = serde_json::from_slice(data)?;
    let id = &v["MemberId"];
    id.as_u64()
        .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| HandlerError::new(format!("no whole-number MemberId in {v}")))
}

async fn send_invitation_mail(
    data: Bytes,
    output: Option<&str>,
    delay: Duration,
) -> Result<(), HandlerError> {
    let member = member_id(&data)?;
    let text = String::from_utf8_lossy(&data).into_owned();
    append(output, &format!("start {text}"))?;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    tracing::info!(member, "invitation mail sent");
    append(output, &format!("done member={member} {text}"))?;
    Ok(())
}

fn append(output: Option<&str>, line: &str) -> Result<(), HandlerError> {
    let Some(path) = output else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    Ok(())
}
