//! Fork and join for the ops: `f(i)` for parts `0..parts`, spread over up
//! to `threads` threads.
//!
//! With the `threads` feature the parts go to a team of helper threads that
//! live for the process (one fewer than the CPUs). The calling thread works
//! too; parts are claimed one at a time from a counter, so which thread runs
//! a part never changes what the part computes (the same bits on one thread
//! or many).
//!
//! After a job a helper spins for [`SPIN`] before it sleeps. A model runs
//! one parallel op after another with short serial gaps between them; a
//! helper that had gone to sleep costs a wake-up (tens of microseconds on a
//! virtual machine) at each. MiniLM's 384×384 projections take about
//! 0.2 ms, so that was a third of what a second thread could save. ONNX
//! Runtime's pool spins the same way by default.
//!
//! One job runs at a time. A call made while the team is busy (from inside
//! a part, or from another thread's session) runs its parts on the calling
//! thread, in order. Either way a panic in one part does not stop the
//! others; the first is raised again once all have run.
//!
//! Without the feature (wasm32, `--no-default-features`) every call runs its
//! parts in order on the calling thread.

use crate::error::Result;

/// `f(i)` for every `i` in `0..parts`, on up to `threads` threads; returns
/// when all are done. A panic in a part is raised again here, after every
/// part has finished.
pub fn run(threads: usize, parts: usize, f: impl Fn(usize) + Sync) {
    #[cfg(feature = "threads")]
    if threads > 1 && parts > 1 && team::run(threads, parts, &f) {
        return;
    }
    let _ = threads;
    let mut first = None;
    for i in 0..parts {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))) {
            first.get_or_insert(p);
        }
    }
    if let Some(p) = first {
        std::panic::resume_unwind(p);
    }
}

/// [`run`] for parts that can fail: the first error (in part order) is
/// returned once every part has finished.
pub fn try_run(threads: usize, parts: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let errors: Vec<std::sync::Mutex<Option<crate::error::Error>>> =
        (0..parts).map(|_| std::sync::Mutex::new(None)).collect();
    run(threads, parts, |i| {
        if let Err(e) = f(i) {
            // A part runs once, so its slot is never contended.
            if let Ok(mut slot) = errors[i].lock() {
                *slot = Some(e);
            }
        }
    });
    for slot in errors {
        if let Some(e) = slot.into_inner().ok().flatten() {
            return Err(e);
        }
    }
    Ok(())
}

/// `f(i, chunk)` for the chunks of `len` elements of `data` (the last may be
/// shorter), on up to `threads` threads.
pub fn chunks_mut<T: Send>(
    threads: usize,
    data: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunks = Chunks::new(data, len);
    // SAFETY: `run` calls each part once, so each chunk is handed out once.
    run(threads, chunks.count(), |i| f(i, unsafe { chunks.get(i) }));
}

/// [`chunks_mut`] for parts that can fail (the first error in part order).
pub fn try_chunks_mut<T: Send>(
    threads: usize,
    data: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    let chunks = Chunks::new(data, len);
    // SAFETY: as in `chunks_mut`.
    try_run(threads, chunks.count(), |i| f(i, unsafe { chunks.get(i) }))
}

/// A mutably borrowed slice cut into chunks of `len` that parts on other
/// threads take one each.
struct Chunks<'a, T> {
    base: SendPtr<T>,
    total: usize,
    len: usize,
    // The borrow of the slice (T itself is covered by `SendPtr`).
    _data: std::marker::PhantomData<&'a mut ()>,
}

impl<'a, T: Send> Chunks<'a, T> {
    fn new(data: &'a mut [T], len: usize) -> Self {
        Chunks {
            base: SendPtr(data.as_mut_ptr()),
            total: data.len(),
            len: len.max(1),
            _data: std::marker::PhantomData,
        }
    }
    fn count(&self) -> usize {
        self.total.div_ceil(self.len)
    }
    /// Chunk `i` (< `count()`).
    ///
    /// # Safety
    /// Each `i` is taken at most once while `self` lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, i: usize) -> &'a mut [T] {
        let start = i * self.len;
        assert!(start < self.total, "chunk {i} of {}", self.count());
        // SAFETY: chunks [start, start + len) ∩ [0, total) of distinct `i`
        // are disjoint pieces of the borrowed slice, and each `i` is taken
        // once (the caller's guarantee).
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.get().add(start),
                self.len.min(self.total - start),
            )
        }
    }
}

/// A pointer the parts share; each part touches only its own elements.
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    /// Through a method, so closures capture the wrapper (Sync), not the
    /// raw field.
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the parts write disjoint ranges behind the pointer (see the
// callers); T: Send lets those elements be written from another thread.
unsafe impl<T: Send> Sync for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SendPtr<T> {}

/// How long a helper spins for the next job before it sleeps.
#[cfg(feature = "threads")]
pub const SPIN: std::time::Duration = std::time::Duration::from_micros(300);

#[cfg(feature = "threads")]
mod team {
    use std::any::Any;
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    use std::ptr;
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
    use std::sync::atomic::{AtomicPtr, AtomicUsize};
    use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
    use std::time::Instant;

    /// One fork: its parts, the next unclaimed one, and how many are done.
    /// Lives on the publishing thread's stack; helpers reach it through
    /// `Team::job` only while `Team::busy` counts them (see `run`).
    struct Job<'a> {
        f: &'a (dyn Fn(usize) + Sync),
        parts: usize,
        /// Helpers with an index below this take part.
        helpers: usize,
        next: AtomicUsize,
        done: AtomicUsize,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
    }

    impl Job<'_> {
        fn work(&self) {
            loop {
                let i = self.next.fetch_add(1, Relaxed);
                if i >= self.parts {
                    return;
                }
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| (self.f)(i)))
                    && let Ok(mut slot) = self.panic.lock()
                {
                    slot.get_or_insert(p);
                }
                self.done.fetch_add(1, Release);
            }
        }
    }

    struct Team {
        /// Held by the thread whose job is out.
        publish: Mutex<()>,
        /// Bumped for each job; helpers wait for it to change.
        epoch: AtomicUsize,
        /// The current job (a `Job<'_>` on the publisher's stack) or null.
        job: AtomicPtr<()>,
        /// Helpers between reading `job` and finishing with it.
        busy: AtomicUsize,
        /// Helpers asleep on `wake` (or about to be).
        sleepers: AtomicUsize,
        sleep: Mutex<()>,
        wake: Condvar,
        /// Helper threads started (one fewer than the CPUs, or fewer if
        /// spawning failed).
        helpers: AtomicUsize,
    }

    fn team() -> &'static Team {
        static TEAM: OnceLock<&'static Team> = OnceLock::new();
        TEAM.get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let team: &'static Team = Box::leak(Box::new(Team {
                publish: Mutex::new(()),
                epoch: AtomicUsize::new(0),
                job: AtomicPtr::new(ptr::null_mut()),
                busy: AtomicUsize::new(0),
                sleepers: AtomicUsize::new(0),
                sleep: Mutex::new(()),
                wake: Condvar::new(),
                helpers: AtomicUsize::new(0),
            }));
            let mut started = 0;
            for index in 0..cpus.saturating_sub(1) {
                let spawned = std::thread::Builder::new()
                    .name(format!("morsel-{}", index + 1))
                    .spawn(move || helper(team, index));
                if spawned.is_err() {
                    break;
                }
                started += 1;
            }
            team.helpers.store(started, SeqCst);
            team
        })
    }

    fn helper(team: &'static Team, index: usize) {
        let mut seen = 0;
        loop {
            // Wait for a new job: spin, then sleep.
            let mut spins = 0u32;
            let mut since: Option<Instant> = None;
            loop {
                let e = team.epoch.load(Acquire);
                if e != seen {
                    seen = e;
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(256)
                    && since.get_or_insert_with(Instant::now).elapsed() > super::SPIN
                {
                    let mut guard = team.sleep.lock().unwrap_or_else(|p| p.into_inner());
                    team.sleepers.fetch_add(1, SeqCst);
                    while team.epoch.load(SeqCst) == seen {
                        guard = team.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
                    }
                    team.sleepers.fetch_sub(1, SeqCst);
                    spins = 0;
                    since = None;
                }
                std::hint::spin_loop();
            }
            team.busy.fetch_add(1, SeqCst);
            let p = team.job.load(SeqCst);
            if !p.is_null() {
                // SAFETY: a non-null `job` is a live Job: its publisher
                // clears the pointer and then waits for `busy` to reach 0
                // before the Job goes out of scope; this thread was counted
                // in `busy` before it read the pointer.
                let job = unsafe { &*(p as *const Job<'_>) };
                if index < job.helpers {
                    job.work();
                }
            }
            team.busy.fetch_sub(1, SeqCst);
        }
    }

    /// Runs the job on the team; false (nothing run) when the team is busy
    /// or has no helpers, and the caller runs the parts itself.
    pub(super) fn run(threads: usize, parts: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        let team = team();
        let helpers = team.helpers.load(Relaxed);
        if helpers == 0 {
            return false;
        }
        let _guard = match team.publish.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let job = Job {
            f,
            parts,
            helpers: (threads - 1).min(helpers),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        team.job.store(&job as *const Job<'_> as *mut (), SeqCst);
        team.epoch.fetch_add(1, SeqCst);
        if team.sleepers.load(SeqCst) > 0 {
            let _s = team.sleep.lock().unwrap_or_else(|p| p.into_inner());
            team.wake.notify_all();
        }
        job.work();
        wait_until(|| job.done.load(Acquire) >= parts);
        team.job.store(ptr::null_mut(), SeqCst);
        wait_until(|| team.busy.load(SeqCst) == 0);
        if let Some(p) = job.panic.lock().unwrap_or_else(|p| p.into_inner()).take() {
            resume_unwind(p);
        }
        true
    }

    /// Spins on `done`, yielding now and then (the other thread may have
    /// been descheduled on a busy machine).
    fn wait_until(done: impl Fn() -> bool) {
        let mut spins = 0u32;
        while !done() {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_part_runs_once() {
        for threads in [1, 2, 4] {
            for parts in [0, 1, 2, 3, 17, 1000] {
                let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                run(threads, parts, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{threads} threads, {parts} parts"
                );
            }
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let mut v = vec![0usize; 1001];
        chunks_mut(2, &mut v, 100, |i, c| {
            assert!(c.len() == 100 || (i == 10 && c.len() == 1));
            c.iter_mut().enumerate().for_each(|(j, x)| *x = i * 100 + j);
        });
        assert!(v.iter().enumerate().all(|(j, &x)| x == j));
    }

    #[test]
    fn first_error_in_part_order_is_returned() {
        let r = try_run(2, 50, |i| {
            if i % 7 == 3 {
                Err(crate::error::Error::Graph(format!("part {i}")))
            } else {
                Ok(())
            }
        });
        assert_eq!(
            r.unwrap_err().to_string(),
            crate::error::Error::Graph("part 3".into()).to_string()
        );
    }

    #[test]
    fn nested_calls_run_on_the_caller() {
        let total = AtomicUsize::new(0);
        run(2, 4, |_| {
            run(2, 5, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 20);
    }

    /// Sessions on several threads at once: one gets the team, the others
    /// run their parts themselves; every call still runs each part once.
    #[test]
    fn concurrent_callers_each_run_all_their_parts() {
        std::thread::scope(|s| {
            for t in 0..4usize {
                s.spawn(move || {
                    for round in 0..200usize {
                        let parts = 1 + (t * 7 + round) % 13;
                        let mut v = vec![0usize; parts * 3];
                        chunks_mut(2, &mut v, 3, |i, c| c.iter_mut().for_each(|x| *x += i + 1));
                        assert!(
                            v.chunks(3)
                                .enumerate()
                                .all(|(i, c)| c.iter().all(|&x| x == i + 1))
                        );
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_part_panics_the_caller_after_the_others_finish() {
        let done = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(2, 8, |i| {
                if i == 2 {
                    panic!("part 2");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 7);
        // The team still works afterwards.
        let n = AtomicUsize::new(0);
        run(2, 8, |_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
