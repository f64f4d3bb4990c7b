//! The cooperative budget: a task that keeps finding ready work yields after a while.
//!
//! Each task poll starts with [`TASK_BUDGET`] units. Every trellis operation that can complete
//! without waiting (a join of a finished task, a checkpoint, later a channel receive or a ready
//! socket) spends one unit through [`poll_proceed`]. When the budget is spent, the operation
//! wakes the task and returns `Pending` instead, so the task goes to the back of its queue and
//! its neighbours run. Such a `Pending` is *forced*; the task root records it so that a
//! cancelled task is not dropped for a suspension it did not choose (DESIGN.md 3.10).
//!
//! Outside a task poll (in `block_on`, on foreign threads) the budget is unconstrained.

use std::cell::Cell;
use std::task::{Context, Poll};

use crate::sync::thread_local_const;
use crate::tuning::TASK_BUDGET;

/// `None`: unconstrained.
type Budget = Option<u8>;

thread_local_const! {
    static BUDGET: Cell<(Budget, bool)> = Cell::new((None, false));
}

/// Installs a budget until dropped, then restores the previous one.
pub(crate) struct BudgetGuard {
    restore: Option<Budget>,
}

impl BudgetGuard {
    /// A worker about to run a task and the LIFO-slot tasks after it: one fresh budget shared
    /// by the whole chain, so a chain of tasks waking each other also yields eventually.
    pub(crate) fn for_chain() -> BudgetGuard {
        let prev = BUDGET.with(|b| b.replace((Some(TASK_BUDGET), false)).0);
        BudgetGuard { restore: Some(prev) }
    }

    /// One task poll: keeps the chain's budget if a worker installed one, otherwise (a
    /// blocking-pool thread) installs a fresh one for this poll. Clears the "forced" flag.
    pub(crate) fn for_poll() -> BudgetGuard {
        BUDGET.with(|b| {
            let (budget, _) = b.get();
            match budget {
                Some(_) => {
                    b.set((budget, false));
                    BudgetGuard { restore: None }
                }
                None => {
                    b.set((Some(TASK_BUDGET), false));
                    BudgetGuard { restore: Some(None) }
                }
            }
        })
    }

    /// Outside any task (`block_on`): unconstrained, whatever the thread was doing before.
    pub(crate) fn unconstrained() -> BudgetGuard {
        let prev = BUDGET.with(|b| b.replace((None, false)).0);
        BudgetGuard { restore: Some(prev) }
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        if let Some(prev) = self.restore {
            // Keep the "forced" flag: the harness reads it after the poll.
            BUDGET.with(|b| b.set((prev, b.get().1)));
        }
    }
}

/// Whether the last task poll on this thread ended in a budget-forced `Pending`.
pub(crate) fn pending_was_forced() -> bool {
    BUDGET.with(|b| b.get().1)
}

/// Spends one unit of budget, or (when spent) wakes the task and returns `Pending`.
///
/// If the operation then turns out not to be ready after all, dropping the returned
/// [`Progress`] without calling [`Progress::made_progress`] refunds the unit.
pub(crate) fn poll_proceed(cx: &mut Context<'_>) -> Poll<Progress> {
    BUDGET.with(|b| {
        let (budget, forced) = b.get();
        match budget {
            None => Poll::Ready(Progress { refund: false }),
            Some(0) => {
                b.set((Some(0), true));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(n) => {
                b.set((Some(n - 1), forced));
                Poll::Ready(Progress { refund: true })
            }
        }
    })
}

/// One unit of budget, spent unless refunded.
#[must_use = "drop it only after deciding whether the operation made progress"]
pub(crate) struct Progress {
    refund: bool,
}

impl Progress {
    /// The operation completed: keep the unit spent.
    pub(crate) fn made_progress(mut self) {
        self.refund = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.refund {
            BUDGET.with(|b| {
                if let (Some(n), forced) = b.get() {
                    b.set((Some(n.saturating_add(1)), forced));
                }
            });
        }
    }
}

/// Whether the current task still has budget left (true outside a task).
pub(crate) fn has_budget_remaining() -> bool {
    BUDGET.with(|b| b.get().0 != Some(0))
}
