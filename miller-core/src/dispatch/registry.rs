//! The registry: which handlers run for which event of which application.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

/// Why a handler failed: a message, recorded in the job's envelope when it
/// is buried. Any error converts into it with `?` (its `Display` text is
/// kept), as does a `String` or `&str` through [`HandlerError::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct HandlerError(String);

impl HandlerError {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// What a handler returns: a boxed future of its outcome.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A registered handler, callable with (event name, data).
pub type Handler = Arc<dyn Fn(String, Bytes) -> HandlerFuture + Send + Sync>;

/// A dedupe key function: (event name, data) to a key, `None` for none.
pub type KeyFn = Arc<dyn Fn(&str, &[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// How the master tells two events apart for a handler's dedupe window.
#[derive(Clone)]
#[non_exhaustive]
pub enum DedupeKey {
    /// The whole data, byte for byte.
    Data,
    /// A field of the JSON data, by a dotted path (`member.id`); an event
    /// whose data is not JSON or lacks the field is never collapsed.
    Field(String),
    /// A function of (event name, data); `None` never collapses.
    Fn(KeyFn),
}

impl fmt::Debug for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DedupeKey::Data => f.write_str("Data"),
            DedupeKey::Field(p) => f.debug_tuple("Field").field(p).finish(),
            DedupeKey::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl DedupeKey {
    /// The key of an event, if it has one.
    pub fn of(&self, event: &str, data: &[u8]) -> Option<Vec<u8>> {
        match self {
            DedupeKey::Data => Some(data.to_vec()),
            DedupeKey::Field(path) => {
                let mut v: serde_json::Value = serde_json::from_slice(data).ok()?;
                for part in path.split('.') {
                    v = match v {
                        serde_json::Value::Object(mut m) => m.remove(part)?,
                        serde_json::Value::Array(mut a) => {
                            let i: usize = part.parse().ok()?;
                            (i < a.len()).then(|| a.swap_remove(i))?
                        }
                        _ => return None,
                    };
                }
                // The value's JSON text: 7 and "7" differ.
                serde_json::to_vec(&v).ok()
            }
            DedupeKey::Fn(f) => f(event, data),
        }
    }
}

/// A handler's dedupe rule: events with the same key within `window` of the
/// first are put once.
#[derive(Debug, Clone)]
pub struct Dedupe {
    /// How a key is read from an event.
    pub key: DedupeKey,
    /// How long after an event its duplicates are dropped.
    pub window: Duration,
}

/// One registration: an event of an application, a handler and its name.
#[derive(Clone)]
pub struct Registration {
    /// The event name (exact, e.g. `activity.INVITE`).
    pub event: String,
    /// The application.
    pub app: String,
    /// The handler's stable name, unique within the application.
    pub name: String,
    /// The handler.
    pub handler: Handler,
    /// Its dedupe rule, if any.
    pub dedupe: Option<Dedupe>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("event", &self.event)
            .field("app", &self.app)
            .field("name", &self.name)
            .field("dedupe", &self.dedupe)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Collapses this handler's duplicate events within `window`, as told
    /// apart by `key`.
    pub fn dedupe(&mut self, key: DedupeKey, window: Duration) -> &mut Self {
        self.dedupe = Some(Dedupe { key, window });
        self
    }
}

/// Handlers by event and application, as the seed's `@on('activity.INVITE', 'zhihu')`.
///
/// ```
/// use miller_core::dispatch::{Registry, HandlerError};
/// #[derive(serde::Deserialize)]
/// struct Invite { #[serde(rename = "MemberId")] member_id: u64 }
///
/// let mut registry = Registry::new();
/// registry.on_json("activity.INVITE", "zhihu", "send_invitation_mail", |_event, invite: Invite| async move {
///     if invite.member_id == 0 { return Err(HandlerError::new("no member")); }
///     Ok(())
/// });
/// assert_eq!(registry.matching("activity.INVITE", "zhihu").count(), 1);
/// assert!(registry.handler("zhihu", "send_invitation_mail").is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<Registration>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `event` of `app` as `name` (replacing a
    /// handler of that name in `app`). It is called with the event name
    /// and the data as published.
    pub fn on<F, Fut>(
        &mut self,
        event: &str,
        app: &str,
        name: &str,
        handler: F,
    ) -> &mut Registration
    where
        F: Fn(String, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |e, d| Box::pin(handler(e, d)) as HandlerFuture);
        self.insert(Registration {
            event: event.to_string(),
            app: app.to_string(),
            name: name.to_string(),
            handler,
            dedupe: None,
        })
    }

    /// As [`Registry::on`], the data decoded from JSON into `T` first:
    /// data that does not decode fails the job with serde's error.
    pub fn on_json<T, F, Fut>(
        &mut self,
        event: &str,
        app: &str,
        name: &str,
        handler: F,
    ) -> &mut Registration
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(String, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.on(event, app, name, move |e, d| {
            let decoded = serde_json::from_slice::<T>(&d);
            let handler = handler.clone();
            async move {
                let value =
                    decoded.map_err(|err| HandlerError::new(format!("bad JSON data: {err}")))?;
                handler(e, value).await
            }
        })
    }

    fn insert(&mut self, r: Registration) -> &mut Registration {
        let i = match self
            .entries
            .iter()
            .position(|x| x.app == r.app && x.name == r.name)
        {
            Some(i) => {
                self.entries[i] = r;
                i
            }
            None => {
                self.entries.push(r);
                self.entries.len() - 1
            }
        };
        &mut self.entries[i]
    }

    /// The registrations for `event` of `app`, in registration order.
    pub fn matching<'a>(
        &'a self,
        event: &'a str,
        app: &'a str,
    ) -> impl Iterator<Item = &'a Registration> + 'a {
        self.entries
            .iter()
            .filter(move |r| r.event == event && r.app == app)
    }

    /// The registration named `name` in `app`.
    pub fn handler(&self, app: &str, name: &str) -> Option<&Registration> {
        self.entries.iter().find(|r| r.app == app && r.name == name)
    }

    /// The registration named `name` in `app`, to change it (its dedupe rule).
    pub fn handler_mut(&mut self, app: &str, name: &str) -> Option<&mut Registration> {
        self.entries
            .iter_mut()
            .find(|r| r.app == app && r.name == name)
    }

    /// Every registration.
    pub fn registrations(&self) -> &[Registration] {
        &self.entries
    }

    /// Whether `app` has any handler.
    pub fn has_app(&self, app: &str) -> bool {
        self.entries.iter().any(|r| r.app == app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls a future that is ready at once (these handlers never wait).
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a handler waited"),
        }
    }

    #[test]
    fn several_handlers_per_event_replaced_by_name() {
        let mut r = Registry::new();
        r.on("a.X", "app", "one", |_, _| async { Ok(()) });
        r.on("a.X", "app", "two", |_, _| async {
            Err(HandlerError::new("no"))
        });
        r.on("a.X", "other", "one", |_, _| async { Ok(()) });
        let names: Vec<_> = r.matching("a.X", "app").map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        r.on("a.Y", "app", "two", |_, _| async { Ok(()) });
        let names: Vec<_> = r.matching("a.X", "app").map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["one"]);
        assert_eq!(r.matching("a.Y", "app").count(), 1);
        assert!(r.has_app("other") && !r.has_app("nope"));
    }

    #[test]
    fn on_json_decodes_or_fails_with_serde_error() {
        #[derive(serde::Deserialize)]
        struct D {
            n: u32,
        }
        let mut r = Registry::new();
        r.on_json("e", "a", "h", |event, d: D| async move {
            if d.n == 7 && event == "e" {
                Ok(())
            } else {
                Err(HandlerError::new("wrong"))
            }
        });
        let h = r.handler("a", "h").unwrap().handler.clone();
        assert_eq!(
            block_on(h("e".into(), Bytes::from_static(b"{\"n\":7}"))),
            Ok(())
        );
        let err = block_on(h("e".into(), Bytes::from_static(b"{\"n\":"))).unwrap_err();
        assert!(err.message().starts_with("bad JSON data: EOF"), "{err}");
    }

    #[test]
    fn dedupe_keys() {
        let data = br#"{"MemberId":7,"a":{"b":[1,"x"]}}"#;
        assert_eq!(
            DedupeKey::Field("MemberId".into()).of("e", data),
            Some(b"7".to_vec())
        );
        assert_eq!(
            DedupeKey::Field("a.b.1".into()).of("e", data),
            Some(b"\"x\"".to_vec())
        );
        assert_eq!(DedupeKey::Field("a.c".into()).of("e", data), None);
        assert_eq!(DedupeKey::Field("x".into()).of("e", b"not json"), None);
        assert_eq!(DedupeKey::Data.of("e", b"raw"), Some(b"raw".to_vec()));
        let f = DedupeKey::Fn(Arc::new(|e, d| Some([e.as_bytes(), d].concat())));
        assert_eq!(f.of("e", b"1"), Some(b"e1".to_vec()));
    }
}
