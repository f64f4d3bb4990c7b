//! `ErrorGroup<E>`: every failure of a nursery, in arrival order (DESIGN.md 4.5).

use std::fmt;

/// The errors of a nursery: every genuine failure of its body and children, in the order they
/// arrived, each with the name of the task that raised it (`body`, or `task <id>`). Always a
/// group, even for one error. With no genuine failure it holds the cancellations that passed
/// through the nursery (and [`is_cancellation`](Self::is_cancellation) is true).
///
/// A nested nursery's group reaches the outer one only as far as `E` carries it (for instance
/// an enum variant holding `ErrorGroup<E>`, or `anyhow::Error`): [`find`](Self::find) and
/// [`split`](Self::split) look at this group's own entries, not inside nested groups.
pub struct ErrorGroup<E> {
    entries: Vec<(String, E)>,
    cancellation: bool,
}

impl<E> ErrorGroup<E> {
    pub(super) fn new(entries: Vec<(String, E)>, cancellation: bool) -> ErrorGroup<E> {
        ErrorGroup { entries, cancellation }
    }

    /// The errors, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = &E> {
        self.entries.iter().map(|(_, e)| e)
    }

    /// The errors with the names of the tasks that raised them, in arrival order.
    pub fn iter_named(&self) -> impl Iterator<Item = (&str, &E)> {
        self.entries.iter().map(|(name, e)| (name.as_str(), e))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the group holds only cancellations (no genuine failure): the nursery was
    /// cancelled from outside, or its body was cancelled.
    pub fn is_cancellation(&self) -> bool {
        self.cancellation
    }

    /// The errors, in arrival order.
    pub fn into_vec(self) -> Vec<E> {
        self.entries.into_iter().map(|(_, e)| e).collect()
    }

    /// The first error (in arrival order) matching `predicate`, e.g.
    /// `group.find(|e| matches!(e, MyError::Io(_)))`.
    pub fn find(&self, mut predicate: impl FnMut(&E) -> bool) -> Option<&E> {
        self.iter().find(|e| predicate(e))
    }

    /// Splits the group into the errors matching `predicate` and the rest, both in arrival
    /// order (either may be empty).
    pub fn split(self, mut predicate: impl FnMut(&E) -> bool) -> (ErrorGroup<E>, ErrorGroup<E>) {
        let cancellation = self.cancellation;
        let (matching, rest): (Vec<_>, Vec<_>) =
            self.entries.into_iter().partition(|(_, e)| predicate(e));
        (ErrorGroup::new(matching, cancellation), ErrorGroup::new(rest, cancellation))
    }
}

impl<E> IntoIterator for ErrorGroup<E> {
    type Item = E;
    type IntoIter = std::vec::IntoIter<E>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl<E: fmt::Debug> fmt::Debug for ErrorGroup<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorGroup")
            .field("errors", &self.entries)
            .field("cancellation", &self.cancellation)
            .finish()
    }
}

/// Draws the group as a tree; an error whose own `Display` spans lines (a nested group) is
/// indented under its branch.
impl<E: fmt::Display> fmt::Display for ErrorGroup<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries.len();
        let what = if self.cancellation { "cancellation" } else { "error" };
        write!(f, "{n} {what}{} in nursery", if n == 1 { "" } else { "s" })?;
        for (i, (name, e)) in self.entries.iter().enumerate() {
            let last = i + 1 == n;
            let (branch, indent) = if last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
            let text = e.to_string();
            let mut lines = text.lines();
            write!(f, "\n{branch}{name}: {}", lines.next().unwrap_or(""))?;
            for line in lines {
                write!(f, "\n{indent}{line}")?;
            }
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ErrorGroup<E> {}
