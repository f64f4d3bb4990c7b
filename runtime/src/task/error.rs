//! `JoinError`: why joining a task did not yield its output.

use std::any::Any;
use std::fmt;

use super::TaskId;
use crate::sync::Mutex;

/// Why a task's join produced no output.
///
/// Exactly one of [`is_cancelled`](Self::is_cancelled), [`is_panic`](Self::is_panic),
/// [`is_failed`](Self::is_failed) and [`is_interrupted`](Self::is_interrupted) is true.
pub struct JoinError {
    id: TaskId,
    repr: Repr,
}

enum Repr {
    Cancelled,
    /// The payload sits behind a lock only so that `JoinError` is `Sync`; it is never shared.
    Panic(Mutex<Box<dyn Any + Send + 'static>>),
    Failed,
    /// The joiner's cancellation, kept alive so that the scope owning it catches (3.8).
    Interrupted(Box<crate::Cancelled>),
}

impl JoinError {
    pub(crate) fn cancelled(id: TaskId) -> JoinError {
        JoinError { id, repr: Repr::Cancelled }
    }

    pub(crate) fn panic(id: TaskId, payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError { id, repr: Repr::Panic(Mutex::new(payload)) }
    }

    /// A nursery child that returned `Err`: the error itself went to the nursery's group.
    #[doc(hidden)]
    pub fn failed(id: TaskId) -> JoinError {
        JoinError { id, repr: Repr::Failed }
    }

    pub(crate) fn interrupted(id: TaskId, cancelled: crate::Cancelled) -> JoinError {
        JoinError { id, repr: Repr::Interrupted(Box::new(cancelled)) }
    }

    /// The task was cancelled (through its handle, its nursery or runtime shutdown) and its
    /// future was dropped before it produced an output.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The task panicked; [`into_panic`](Self::into_panic) returns the payload.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// A nursery child returned `Err`; the error went to the nursery's `ErrorGroup`.
    pub fn is_failed(&self) -> bool {
        matches!(self.repr, Repr::Failed)
    }

    /// The *joiner* was cancelled while waiting; the task runs on and can be joined later.
    pub fn is_interrupted(&self) -> bool {
        matches!(self.repr, Repr::Interrupted(_))
    }

    /// The id of the task this error is about.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The panic payload, to pass to `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the error is not a panic (check [`is_panic`](Self::is_panic) first).
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic().unwrap_or_else(|e| {
            panic!("`JoinError::into_panic` on a JoinError that is not a panic: {e}")
        })
    }

    /// For an interrupted join ([`is_interrupted`](Self::is_interrupted)): the joiner's own
    /// `Cancelled`, to propagate with `?` so the scope that was cancelled catches it; the
    /// error back otherwise.
    pub fn try_into_cancelled(self) -> Result<crate::Cancelled, JoinError> {
        match self.repr {
            Repr::Interrupted(cancelled) => Ok(*cancelled),
            repr => Err(JoinError { id: self.id, repr }),
        }
    }

    /// The panic payload, or the error back if it is not a panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(payload) => Ok(payload.into_inner()),
            repr => Err(JoinError { id: self.id, repr }),
        }
    }
}

/// The message of a panic payload, when it is a string (as `panic!` makes it).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => write!(f, "task {} was cancelled", self.id),
            Repr::Panic(payload) => match panic_message(&**payload.lock()) {
                Some(msg) => write!(f, "task {} panicked with message {:?}", self.id, msg),
                None => write!(f, "task {} panicked", self.id),
            },
            Repr::Failed => write!(f, "task {} failed; its error went to its nursery", self.id),
            Repr::Interrupted(_) => {
                write!(
                    f,
                    "waiting for task {} was interrupted: the waiting task was cancelled",
                    self.id
                )
            }
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => write!(f, "JoinError::Cancelled({:?})", self.id),
            Repr::Panic(payload) => match panic_message(&**payload.lock()) {
                Some(msg) => write!(f, "JoinError::Panic({:?}, {:?}, ...)", self.id, msg),
                None => write!(f, "JoinError::Panic({:?}, ...)", self.id),
            },
            Repr::Failed => write!(f, "JoinError::Failed({:?})", self.id),
            Repr::Interrupted(_) => write!(f, "JoinError::Interrupted({:?})", self.id),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        std::io::Error::other(e)
    }
}
