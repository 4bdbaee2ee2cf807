//! The memory a shard lets its connections fill with requests (`queued.max.request.bytes`,
//! divided evenly among the shards).
//!
//! A connection takes from its shard's budget before it reads request bytes, a chunk at a
//! time as they arrive, and gives back when the request has been handled. A chunk is granted
//! whenever some budget is left, even if it is larger than what is left (as Kafka's memory
//! pool does). When nothing is left, one grant (the first to find it so) may go on
//! overdrawing until it is dropped: otherwise readers that each hold part of a large frame
//! could wait for each other forever. So what is taken stays below the budget plus one
//! largest request (`socket.request.max.bytes`), and a request of any allowed size gets
//! through; the others wait until handled requests give bytes back.
//!
//! Single-threaded: a budget lives on its shard (`Rc`, `Cell`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

pub struct MemoryBudget {
    total: i64,
    /// Bytes left; negative after a grant larger than what was left. `None`: unbounded.
    available: Option<Cell<i64>>,
    /// The grant allowed to overdraw while nothing is left.
    overdrawing: Cell<Option<u64>>,
    next_grant_id: Cell<u64>,
    waiting: RefCell<Vec<Waker>>,
}

impl MemoryBudget {
    pub fn new(bytes: Option<usize>) -> Rc<MemoryBudget> {
        let total = bytes.map_or(i64::MAX, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
        Rc::new(MemoryBudget {
            total,
            available: bytes.map(|_| Cell::new(total)),
            overdrawing: Cell::new(None),
            next_grant_id: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
        })
    }

    /// An empty grant, to grow as a request's bytes arrive.
    pub fn grant(self: &Rc<Self>) -> Grant {
        let id = self.next_grant_id.get();
        self.next_grant_id.set(id + 1);
        Grant { budget: self.clone(), id, bytes: 0 }
    }

    /// Whether at least half the budget would be left after granting `bytes` now.
    pub fn leaves_half(&self, bytes: usize) -> bool {
        self.available().is_none_or(|available| available - bytes as i64 >= self.total / 2)
    }

    /// Bytes left (negative when overdrawn); `None` when unbounded.
    pub fn available(&self) -> Option<i64> {
        self.available.as_ref().map(Cell::get)
    }
}

/// Bytes taken from a budget, given back when dropped.
pub struct Grant {
    budget: Rc<MemoryBudget>,
    id: u64,
    bytes: usize,
}

impl Grant {
    /// Takes `bytes` more, once some budget is left.
    pub async fn grow(&mut self, bytes: usize) {
        if let Some(available) = &self.budget.available {
            let budget = &self.budget;
            std::future::poll_fn(|cx| {
                if available.get() > 0 {
                    return Poll::Ready(());
                }
                match budget.overdrawing.get() {
                    None => {
                        budget.overdrawing.set(Some(self.id));
                        Poll::Ready(())
                    }
                    Some(id) if id == self.id => Poll::Ready(()),
                    Some(_) => {
                        budget.waiting.borrow_mut().push(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await;
            available.set(available.get() - bytes as i64);
        }
        self.bytes += bytes;
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let Some(available) = &self.budget.available else { return };
        available.set(available.get() + self.bytes as i64);
        let overdrew = self.budget.overdrawing.get() == Some(self.id);
        if overdrew {
            self.budget.overdrawing.set(None);
        }
        if available.get() > 0 || overdrew {
            // Every waiter looks again; those that find nothing left wait again.
            for waker in self.budget.waiting.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn grants_are_made_while_something_is_left_then_wait_until_bytes_come_back() {
        let budget = MemoryBudget::new(Some(100));
        let mut first = budget.grant();
        // Larger than the whole budget, yet granted: something was left.
        assert!(first.grow(150).now_or_never().is_some());
        assert_eq!(budget.available(), Some(-50));
        // Nothing left: one grant may overdraw, the others wait.
        let mut second = budget.grant();
        assert!(second.grow(10).now_or_never().is_some());
        let mut third = budget.grant();
        {
            let waiting = third.grow(10);
            futures::pin_mut!(waiting);
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
            drop(first);
            assert!(waiting.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(budget.available(), Some(80));
        drop((second, third));
        assert_eq!(budget.available(), Some(100));
    }

    #[test]
    fn one_grant_at_a_time_overdraws_so_that_partial_frames_cannot_deadlock() {
        let budget = MemoryBudget::new(Some(100));
        let (mut first, mut second) = (budget.grant(), budget.grant());
        assert!(first.grow(60).now_or_never().is_some());
        assert!(second.grow(60).now_or_never().is_some());
        // Nothing left: the second (first to find it so) goes on, the first waits for it.
        assert!(second.grow(60).now_or_never().is_some());
        assert!(second.grow(60).now_or_never().is_some());
        assert!(first.grow(60).now_or_never().is_none());
        assert_eq!(budget.available(), Some(-140));
        drop(second);
        assert!(first.grow(60).now_or_never().is_some(), "the overdraft passes on");
        assert_eq!(budget.available(), Some(-20));
    }

    #[test]
    fn half_the_budget_is_kept_for_chunked_reads() {
        let budget = MemoryBudget::new(Some(100));
        assert!(budget.leaves_half(50) && !budget.leaves_half(51));
        let mut grant = budget.grant();
        assert!(grant.grow(30).now_or_never().is_some());
        assert!(budget.leaves_half(20) && !budget.leaves_half(21));
        assert!(MemoryBudget::new(None).leaves_half(usize::MAX / 2));
    }

    #[test]
    fn an_unbounded_budget_never_waits() {
        let budget = MemoryBudget::new(None);
        let mut grant = budget.grant();
        assert!(grant.grow(usize::MAX / 2).now_or_never().is_some());
        assert!(grant.grow(usize::MAX / 2).now_or_never().is_some());
        assert_eq!(budget.available(), None);
    }
}
